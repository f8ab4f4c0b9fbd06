import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';
import { joinPartitioned, type PartitionedHandle, readPartitionStatus } from '../../src/partitions/index.js';
import { openStore } from '../../src/store/index.js';
import type { Store } from '../../src/store/types.js';
import {
  checkConvergence,
  checkOwnership,
  describeViolations,
  ETCD_INSTALL_HINT,
  type EtcdCluster,
  historyNow,
  historyTimeOf,
  MemoryHistory,
  needBinary,
  recordingWorker,
  startEtcd,
} from '../../src/testing/index.js';
import { systemClock } from '../../src/clock.js';
import { isMusterError } from '../../src/errors.js';

const run = promisify(execFile);
const bin = new URL('../../../bin/muster.js', import.meta.url).pathname;
const quiet = { info: () => undefined, warn: () => undefined, error: () => undefined };

async function until(cond: () => boolean | Promise<boolean>, ms = 15_000): Promise<void> {
  const t0 = Date.now();
  while (!(await cond())) {
    if (Date.now() - t0 > ms) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('partition ownership on a real etcd', { skip: needBinary('etcd', ETCD_INSTALL_HINT) }, () => {
  let cluster: EtcdCluster;
  let store: Store;
  before(async () => {
    cluster = await startEtcd({ members: 1 });
    store = await openStore(cluster.url);
  });
  after(async () => {
    await store?.close();
    await cluster?.close();
  });

  test('two instances converge, the CLI shows owners and tokens, a leave hands over', async () => {
    const history = new MemoryHistory();
    const join = (id: string): Promise<PartitionedHandle> =>
      joinPartitioned(store, {
        service: 'cli',
        id,
        partitions: 8,
        ttl: '2s',
        logger: quiet,
        onAcquire: recordingWorker({
          sink: history,
          instance: id,
          now: historyNow,
          toHistoryTime: historyTimeOf,
          clock: systemClock,
        }),
      });
    const a = await join('a');
    const b = await join('b');
    const settled = async (live: string[]): Promise<boolean> => {
      const s = await readPartitionStatus(store, 'cli');
      return s.partitions.every((p) => p.settled && p.owner !== null && live.includes(p.owner));
    };
    await until(() => settled(['a', 'b']));
    const out = await run(process.execPath, [
      bin,
      'partitions',
      '--store',
      cluster.url,
      '--service',
      'cli',
      '--json',
    ]);
    const status = JSON.parse(out.stdout) as {
      partitions: { partition: string; owner: string; token: number }[];
    };
    assert.equal(status.partitions.length, 8);
    for (const row of status.partitions) {
      const h = row.owner === 'a' ? a : b;
      assert.equal(h.assumed.get(row.partition)?.token, row.token);
    }
    const text = await run(process.execPath, [bin, 'partitions', '--store', cluster.url, '--service', 'cli']);
    assert.match(text.stdout, /PARTITION\s+ASSIGNED\s+OWNER\s+TOKEN\s+SINCE/);
    await a.leave();
    await until(() => settled(['b']));
    await until(() => b.assumed.size === 8);
    const result = checkOwnership(history.events);
    const violations = [
      ...result.violations,
      ...checkConvergence(result, { partitions: ['0', '1', '2', '3', '4', '5', '6', '7'], live: ['b'] }),
    ];
    assert.equal(violations.length, 0, describeViolations(violations));
    await b.close();
  });

  test('an owner key deleted by an operator stops the work at once; the token grows', async () => {
    const lost: string[] = [];
    const h = await joinPartitioned(store, {
      service: 'keylost',
      id: 'x',
      partitions: 1,
      ttl: '2s',
      logger: quiet,
      onAcquire: (_p, { signal }) =>
        new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve())),
    });
    await until(() => h.assumed.size === 1);
    const first = h.assumed.get('0')!.token;
    h.on('lost', (p, _t, cause) => lost.push(`${p}:${cause}`));
    await store.delete('/muster/services/keylost/owners/0');
    await until(() => lost.length === 1);
    assert.deepEqual(lost, ['0:key-lost']);
    await until(() => h.assumed.size === 1);
    assert.ok(h.assumed.get('0')!.token > first);
    await h.close();
  });

  test('work that ignores its signal keeps the partition (MUSTER_STOP_TIMEOUT) until it stops', async () => {
    let finish: () => void = () => undefined;
    const errors: unknown[] = [];
    const stubborn = await joinPartitioned(store, {
      service: 'stubborn',
      id: 's',
      partitions: 1,
      ttl: '2s',
      stopTimeout: 200,
      logger: quiet,
      onAcquire: () => new Promise<void>((resolve) => (finish = resolve)),
    });
    stubborn.on('error', (e) => errors.push(e));
    await until(() => stubborn.assumed.size === 1);
    const leaving = stubborn.drain();
    await until(() => errors.some((e) => isMusterError(e, 'MUSTER_STOP_TIMEOUT')));
    const s = await readPartitionStatus(store, 'stubborn');
    assert.equal(s.partitions[0]?.owner, 's', 'the partition stays owned while its work runs');
    finish();
    await leaving;
    await stubborn.close();
  });
});
