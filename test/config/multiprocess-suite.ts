/**
 * Invariant 1 and fail-closed behaviour over real worker processes on real stores: a real etcd from
 * the harness, and `muster serve`. A recorder collects every task's start time and version; the
 * checker judges the history against the store's final timeline.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { initConfig, publishConfig, readConfig } from '../../src/config/index.js';
import { checkVersionHistory } from '../../src/testing/index.js';
import { Fleet } from '../../src/demo/fleet.js';
import { openStore, type Store } from '../../src/store/index.js';
import { startFaultProxy } from '../../src/testing/index.js';
import { setTimeout as sleep } from 'node:timers/promises';

/** True once every worker of `fleet` has reported a task started after `t` (wall ms) that `ok` accepts. */
function everyWorkerStarted(fleet: Fleet, t: number, ok: (version: number | null) => boolean = () => true) {
  return (): boolean =>
    fleet.names.every((w) => fleet.tasks.some((x) => x.worker === w && x.startedAt > t && ok(x.version)));
}
const serving = (version: number | null): boolean => version !== null;

const POLICY = { maxStaleness: '1s', maxClockSkew: '20ms', minLeadTime: '1400ms' }; // 360 ms of commit slack

export interface Backend {
  readonly url: string;
  /** host:port of the one member, for fault proxies. */
  readonly endpoint: string;
  /** The store URL through a proxy listening on `endpoint`. Default: `etcd://<endpoint>`. */
  readonly urlVia?: (endpoint: string) => string;
  close(): Promise<void>;
}

/** The suite, run by multiprocess-etcd.test.ts and multiprocess-serve.test.ts. */
export function configProcessSuite(name: string, skip: false | string, start: () => Promise<Backend>): void {
  describe(`scheduled configuration across processes on ${name}`, { skip }, () => {
    let backend: Backend;
    let store: Store;
    before(async () => {
      backend = await start();
      store = await openStore(backend.url);
    });
    after(async () => {
      await store?.close();
      await backend?.close();
    });

    test('no task uses a version other than the one in force at its start, across many close switches', async () => {
      await initConfig(store, 'inv', POLICY);
      await publishConfig(store, 'inv', { include_mood: false, delay_ms: 0 }, { in: '1400ms' });
      const fleet = await Fleet.start({ store: backend.url, config: 'inv', workers: 4, taskIntervalMs: 4 });
      try {
        // The first version is in force on every worker before the switches start.
        await fleet.waitFor(everyWorkerStarted(fleet, 0, serving), 15_000, 'every worker to run a task');
        let last = 0;
        for (let i = 0; i < 12; i++) {
          const lead = 1400 + Math.floor(Math.random() * 200); // as close to minLeadTime as allowed
          const v = await publishConfig(
            store,
            'inv',
            { include_mood: i % 2 === 0, delay_ms: 0 },
            { in: lead },
          );
          last = v.activateAt;
          await sleep(150 + Math.random() * 300); // pacing: several versions are scheduled at once
        }
        // Every worker has started tasks well past the last switch: the history covers all of them.
        await fleet.waitFor(everyWorkerStarted(fleet, last + 400), 15_000, 'tasks after the last switch');
      } finally {
        await fleet.stop();
      }
      const state = await readConfig(store, 'inv');
      const report = checkVersionHistory(fleet.tasks, state.versions);
      assert.deepEqual(report.violations.slice(0, 5), []);
      assert.ok(report.ran > 500, `only ${report.ran} tasks ran`);
      for (const name of fleet.names) {
        const seen = new Set(
          fleet.tasks.filter((t) => t.worker === name && t.version !== null).map((t) => t.version),
        );
        assert.ok(seen.size >= 8, `${name} used only ${seen.size} versions`);
      }
      // Every task straddling an activation instant was checked; count them to be sure there were some.
      const near = fleet.tasks.filter((t) =>
        state.versions.some((v) => Math.abs(t.startedAt - v.activateAt) < 5 && t.version !== null),
      );
      assert.ok(near.length > 0, 'no task started within 5 ms of an activation');
    });

    test('a black-holed process refuses every task within maxStaleness + 100 ms, and serves again after', async () => {
      await initConfig(store, 'fc', POLICY);
      await publishConfig(store, 'fc', { include_mood: false, delay_ms: 0 }, { in: '1400ms' });
      const endpoint = backend.endpoint;
      const proxies = [
        await startFaultProxy({ target: endpoint }),
        await startFaultProxy({ target: endpoint }),
      ];
      const fleet = await Fleet.start({
        store: backend.url,
        storeFor: (i) => {
          const via = proxies[i]?.endpoint as string;
          return backend.urlVia?.(via) ?? `etcd://${via}`;
        },
        config: 'fc',
        workers: 2,
        taskIntervalMs: 5,
      });
      let cutAt = 0;
      let healedAt = 0;
      try {
        await fleet.waitFor(everyWorkerStarted(fleet, 0, serving), 15_000, 'every worker to run a task');
        cutAt = Date.now();
        proxies[0]?.blackhole();
        // Both workers have tried tasks through the whole cut (maxStaleness + 1.5 s): the assertions
        // below then judge a window that was observed, not one the workers slept through.
        await fleet.waitFor(everyWorkerStarted(fleet, cutAt + 1000 + 1500), 15_000, 'tasks after the cut');
        proxies[0]?.pass();
        proxies[0]?.cutAll(); // the black-holed connection is beyond repair: reconnect
        healedAt = Date.now();
        await fleet.waitFor(
          () =>
            fleet.tasks.some((t) => t.worker === 'worker_1' && t.startedAt > healedAt && t.version !== null),
          10_000,
          'worker_1 to serve again',
        );
      } finally {
        await fleet.stop();
        for (const p of proxies) await p.close();
      }
      const w1 = fleet.tasks.filter((t) => t.worker === 'worker_1');
      const ranWhileCut = w1.filter(
        (t) => t.startedAt > cutAt + 1000 + 100 && t.startedAt < healedAt && t.version !== null,
      );
      assert.deepEqual(
        ranWhileCut.slice(0, 3),
        [],
        'tasks ran on a black-holed process after maxStaleness + 100 ms',
      );
      assert.ok(
        w1.some((t) => t.startedAt > cutAt + 1100 && t.startedAt < healedAt && t.version === null),
        'no task was refused',
      );
      const w2cut = fleet.tasks.filter(
        (t) => t.worker === 'worker_2' && t.startedAt > cutAt && t.startedAt < healedAt,
      );
      const w2ran = w2cut.filter((t) => t.version !== null).length;
      // The healthy worker keeps serving (a loaded CI machine may delay a proof now and then).
      assert.ok(
        w2cut.length > 0 && w2ran >= 0.8 * w2cut.length,
        `healthy worker ran ${w2ran}/${w2cut.length}`,
      );
      const state = await readConfig(store, 'fc');
      assert.deepEqual(checkVersionHistory(fleet.tasks, state.versions).violations, []);
    });
  });
}
