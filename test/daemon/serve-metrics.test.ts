import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { request } from 'undici';
import { openStore } from '../../src/store/index.js';
import { startChild, within } from './child.js';
import { parsePrometheusText, sampleValue } from './prom-text.js';

const bin = new URL('../../../bin/muster.js', import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), 'muster-serve-metrics-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const TOKEN = '0123456789abcdef0123456789abcdef';

describe('muster serve on the daemon runtime', () => {
  test(
    'serves /metrics (etcd names) on its admin address; SIGTERM exits 0',
    { timeout: 60_000 },
    async () => {
      const run = startChild(process.execPath, [
        bin,
        'serve',
        '--data-dir',
        join(dir, 'a'),
        '--listen',
        '127.0.0.1:0',
        '--admin',
        '127.0.0.1:0',
        '--log-level',
        'warn',
      ]);
      try {
        const storeLine = await run.waitForLine((l) => l.includes('listening on etcd://'));
        const adminLine = await run.waitForLine((l) => l.includes('admin on http://'));
        const storeUrl = /etcd:\/\/[\d.]+:\d+/.exec(storeLine)![0];
        const adminUrl = /http:\/\/[\d.]+:\d+/.exec(adminLine)![0];
        const store = await openStore(storeUrl);
        try {
          for (let i = 0; i < 5; i++) await store.put(`/m/${i}`, `v${i}`);
          await store.get('/m/0');
          await store.grantLease(30);
          const res = await request(`${adminUrl}/metrics`);
          assert.equal(res.statusCode, 200);
          assert.match(String(res.headers['content-type']), /^text\/plain; version=0\.0\.4/);
          const samples = parsePrometheusText(await res.body.text());
          const handled = (method: string): number | undefined =>
            sampleValue(samples, 'grpc_server_handled_total', {
              grpc_service: 'etcdserverpb.KV',
              grpc_method: method,
              grpc_code: 'OK',
            });
          assert.ok((handled('Put') ?? 0) >= 5, `Put OK: ${handled('Put')}`);
          assert.ok((handled('Range') ?? 0) >= 1);
          assert.ok((sampleValue(samples, 'etcd_disk_wal_fsync_duration_seconds_count') ?? 0) >= 5);
          assert.ok((sampleValue(samples, 'muster_serve_wal_batch_records_count') ?? 0) >= 1);
          assert.ok((sampleValue(samples, 'etcd_disk_wal_write_bytes_total') ?? 0) > 0);
          assert.equal(sampleValue(samples, 'etcd_debugging_mvcc_keys_total'), 5);
          assert.ok((sampleValue(samples, 'muster_serve_leases') ?? 0) >= 1);
          assert.ok((sampleValue(samples, 'etcd_mvcc_db_total_size_in_bytes') ?? 0) > 0);
          assert.ok((sampleValue(samples, 'etcd_debugging_mvcc_current_revision') ?? 0) >= 6);
          assert.ok(sampleValue(samples, 'etcd_debugging_mvcc_watcher_total') !== undefined);
          assert.ok((sampleValue(samples, 'process_resident_memory_bytes') ?? 0) > 0);
          const status = (await (await request(`${adminUrl}/v1/status`)).body.json()) as {
            daemon: string;
            status: { url: string };
          };
          assert.equal(status.daemon, 'serve');
          assert.equal(status.status.url, storeUrl);
        } finally {
          await store.close();
        }
        run.child.kill('SIGTERM');
        assert.deepEqual(
          await within(run.exit, 20_000, 'exit after SIGTERM'),
          { code: 0, signal: null },
          run.stderr(),
        );
        assert.ok(run.lines.some((l) => l === 'muster serve: stopped'));
      } finally {
        run.kill();
      }
    },
  );

  test(
    'an admin address beyond loopback needs --admin-token-file, and then requires the token',
    { timeout: 60_000 },
    async () => {
      const refused = startChild(process.execPath, [
        bin,
        'serve',
        '--data-dir',
        join(dir, 'b'),
        '--listen',
        '127.0.0.1:0',
        '--admin',
        '0.0.0.0:0',
      ]);
      try {
        assert.deepEqual(await within(refused.exit, 20_000, 'refusal'), { code: 1, signal: null });
        assert.match(
          refused.stderr(),
          /^MUSTER_INVALID_ARGUMENT: the admin API on 0\.0\.0\.0 would be reachable/m,
        );
      } finally {
        refused.kill();
      }
      const tokenFile = join(dir, 'admin-token');
      writeFileSync(tokenFile, `${TOKEN}\n`);
      const run = startChild(process.execPath, [
        bin,
        'serve',
        '--data-dir',
        join(dir, 'b'),
        '--listen',
        '127.0.0.1:0',
        '--admin',
        '0.0.0.0:0',
        '--admin-token-file',
        tokenFile,
        '--log-level',
        'warn',
      ]);
      try {
        const adminLine = await run.waitForLine((l) => l.includes('admin on http://'));
        const port = /:(\d+) /.exec(adminLine)![1];
        const anonymous = await request(`http://127.0.0.1:${port}/metrics`);
        assert.equal(anonymous.statusCode, 401);
        assert.equal(
          ((await anonymous.body.json()) as { error: { code: string } }).error.code,
          'MUSTER_UNAUTHENTICATED',
        );
        const authorised = await request(`http://127.0.0.1:${port}/metrics`, {
          headers: { authorization: `Bearer ${TOKEN}` },
        });
        assert.equal(authorised.statusCode, 200);
        parsePrometheusText(await authorised.body.text());
        run.child.kill('SIGINT');
        assert.deepEqual(await within(run.exit, 20_000, 'exit after SIGINT'), { code: 0, signal: null });
      } finally {
        run.kill();
      }
    },
  );
});
