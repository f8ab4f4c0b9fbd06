/**
 * What tools show of `muster serve` (issue 13 §3, cosmetic): the cluster id differs from the member
 * id, the raft term is the same ≥ 1 everywhere, lease ids look like etcd's (large int64s, not 1, 2,
 * …), and the smallest lease TTL is etcd's 2 s.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { Etcd3 } from 'etcd3';
import { startServer } from '../../src/server/index.js';

describe('muster serve ids and lease TTLs', () => {
  test(
    'cluster id ≠ member id, raft term ≥ 1 and consistent, etcd-like lease ids, 2 s minimum TTL',
    { timeout: 60_000 },
    async () => {
      const dir = mkdtempSync(join(tmpdir(), 'muster-ids-'));
      let server = await startServer({ dataDir: dir, listen: '127.0.0.1:0' });
      let client = new Etcd3({ hosts: `${server.host}:${server.port}` });
      try {
        const put = await client.put('/i/a').value('1');
        assert.notEqual(put.header.cluster_id, put.header.member_id);
        const status = await client.maintenance.status({});
        assert.ok(Number(put.header.raft_term) >= 1);
        assert.equal(status.raftTerm, put.header.raft_term);
        assert.equal(status.header.cluster_id, put.header.cluster_id);
        const g1 = await client.leaseClient.leaseGrant({ TTL: 1 });
        const g2 = await client.leaseClient.leaseGrant({ TTL: 30 });
        assert.equal(g1.TTL, '2', 'a 1 s lease is granted 2 s, as etcd does');
        assert.equal(g2.TTL, '30');
        assert.ok(BigInt(g1.ID) > 1n << 32n, `lease id ${g1.ID} looks like etcd's`);
        assert.notEqual(g1.ID, g2.ID);
        assert.ok(BigInt(g2.ID) < 1n << 63n);
        const clusterId = put.header.cluster_id;
        client.close();
        await server.close();
        // Stable across a restart; new lease ids do not reuse old ones.
        server = await startServer({ dataDir: dir, listen: '127.0.0.1:0' });
        client = new Etcd3({ hosts: `${server.host}:${server.port}` });
        const again = await client.put('/i/b').value('2');
        assert.equal(again.header.cluster_id, clusterId);
        const g3 = await client.leaseClient.leaseGrant({ TTL: 10 });
        assert.ok(![g1.ID, g2.ID].includes(g3.ID));
        const ttl = await client.leaseClient.leaseTimeToLive({ ID: g2.ID });
        assert.equal(ttl.grantedTTL, '30');
      } finally {
        client.close();
        await server.close();
        rmSync(dir, { recursive: true, force: true });
      }
    },
  );
});
