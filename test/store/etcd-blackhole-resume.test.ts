/**
 * A link to etcd that goes dark (both directions; the connections stay open, as behind a dead
 * router) and then returns — the test itself resets nothing — must not leave the etcd engine hanging:
 * unary calls, lease renewals and watches complete again within a bounded time, and a partitioned
 * instance whose session was lost meanwhile rejoins and runs its partition again.
 *
 * Two outages: `blackhole` (bytes dropped; the proxy resets, when the link returns, the connections
 * that lost bytes, as TCP does once it gives up — see src/testing/fault-proxy.ts) and `pause` (bytes
 * held and delivered when the link returns, as TCP retransmission does).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { isMusterError, isRetryable } from '../../src/errors.js';
import { joinPartitioned, openServiceView, type PartitionedHandle } from '../../src/partitions/index.js';
import { type EtcdStore, openEtcdStore } from '../../src/store/etcd/index.js';
import {
  ETCD_INSTALL_HINT,
  type EtcdCluster,
  type FaultProxy,
  needBinary,
  startEtcd,
  startFaultProxy,
} from '../../src/testing/index.js';
import { readUntil, text, uniquePrefix } from './etcd-helpers.js';

/** How long after the link returns every operation must work again (keep-alive detection + reconnect). */
const RECOVERY_BOUND_MS = 15_000;

const logged: string[] = [];
const quiet = {
  info: (o: object, m: string) => void logged.push(`info ${m} ${JSON.stringify(o)}`),
  warn: (o: object, m: string) => void logged.push(`warn ${m} ${JSON.stringify(o)}`),
  error: (o: object, m: string) => void logged.push(`error ${m} ${JSON.stringify(o)}`),
};

/** Runs `fn` until it succeeds, retrying retryable errors, and fails once `deadline` has passed. */
async function eventually<T>(what: string, deadline: number, fn: () => Promise<T>): Promise<T> {
  const errors: string[] = [];
  for (;;) {
    const left = deadline - performance.now();
    if (left <= 0)
      throw new Error(`${what} did not complete in time; errors: ${errors.slice(-5).join(', ')}`);
    let timer: NodeJS.Timeout | undefined;
    try {
      // A call that never settles is the bug: race it against the deadline.
      return await Promise.race([
        fn(),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`${what} hung past the recovery bound`)), left);
        }),
      ]);
    } catch (err) {
      if (!isMusterError(err) || !isRetryable(err)) throw err;
      errors.push(err.code);
      await new Promise((r) => setTimeout(r, 100));
    } finally {
      clearTimeout(timer);
    }
  }
}

async function until(what: string, deadline: number, cond: () => boolean): Promise<void> {
  while (!cond()) {
    if (performance.now() > deadline) throw new Error(`${what} not reached in time`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

for (const outage of ['blackhole', 'pause'] as const) {
  describe(
    `a link to etcd that goes dark (${outage}) and returns`,
    { skip: needBinary('etcd', ETCD_INSTALL_HINT) },
    () => {
      let cluster: EtcdCluster;
      let proxy: FaultProxy;
      let observer: EtcdStore;
      let client: EtcdStore;
      let handle: PartitionedHandle | undefined;
      before(async () => {
        cluster = await startEtcd();
        proxy = await startFaultProxy({ target: cluster.endpoints[0] as string });
        const prefix = uniquePrefix(`dark-${outage}`);
        observer = openEtcdStore(cluster.url, { keyPrefix: prefix });
        client = openEtcdStore(`etcd://${proxy.endpoint}`, { keyPrefix: prefix });
      });
      after(async () => {
        proxy?.pass();
        await handle?.close();
        await client?.close();
        await observer?.close();
        await proxy?.close();
        await cluster?.close();
      });

      test('calls, renewals, watches and a partitioned handle recover', { timeout: 60_000 }, async () => {
        // Everything in use on the connections before the outage: a watch, a lease, a session.
        const watch = client.watch('w', { fromRevision: (await client.headRevision()) + 1 });
        await client.put('w', 'before');
        await readUntil(watch, (ev) => ev.some((e) => text(e.kv.value) === 'before'));
        const lease = await client.grantLease(60);
        await client.keepAlive(lease.id);
        handle = await joinPartitioned(client, {
          service: 'dark',
          id: 'p',
          partitions: 1,
          ttl: '3s',
          logger: quiet,
          onAcquire: (_p, { signal }) =>
            new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve())),
        });
        const h = handle;
        await until('partition acquired', performance.now() + 20_000, () => h.assumed.size === 1);
        const firstLease = h.leaseId;

        proxy.set({ kind: outage });
        // Requests in flight while the link is dark: each ends at its deadline, retryably.
        const dark = await Promise.allSettled([
          client.put('w', 'dark'),
          client.keepAlive(lease.id),
          client.get('w'),
        ]);
        for (const r of dark) {
          assert.equal(r.status, 'rejected');
          assert.ok(isMusterError(r.reason) && isRetryable(r.reason), String(r.reason));
        }
        // The session (3 s) is lost while dark.
        await until('session lost', performance.now() + 15_000, () => h.state === 'lost');
        proxy.pass(); // the test resets no connection itself
        const resumedAt = performance.now();
        const deadline = resumedAt + RECOVERY_BOUND_MS;

        await eventually('put', deadline, () => client.put('k', 'after'));
        assert.equal(text((await eventually('get', deadline, () => client.get('k')))!.value), 'after');
        const t = await eventually('txn', deadline, () =>
          client.txn(
            [{ key: 'k', target: 'value', op: '=', value: 'after' }],
            [{ type: 'put', key: 'k', value: 'txn' }],
          ),
        );
        assert.equal(t.succeeded, true);
        assert.ok((await eventually('keepAlive', deadline, () => client.keepAlive(lease.id))) > 0);

        // The watch opened before the outage delivers a write made after it.
        await observer.put('w', 'after');
        await readUntil(
          watch,
          (ev) => ev.some((e) => text(e.kv.value) === 'after'),
          Math.max(1, deadline - performance.now()),
        );
        watch.close();
        const callsBackMs = performance.now() - resumedAt;

        // The partitioned instance rejoins with a new session and runs its partition again.
        await until(
          'rejoined and reacquired',
          deadline + 5_000,
          () => h.state === 'active' && h.assumed.size === 1 && h.leaseId !== firstLease,
        ).catch(async (err: unknown) => {
          // What the instance's view believes against what the store holds (a view that missed an
          // event keeps a stale owner and never acquires).
          const v = openServiceView(client, 'dark');
          const believed = [...v.owners.keys()].join() || 'none';
          v.close();
          const held = (await observer.range({ prefix: '/muster/services/dark/owners/' })).kvs;
          throw new Error(
            `${String(err)}: state ${h.state}, view owners ${believed}, store owners ${held.map((kv) => kv.key).join() || 'none'}\n${logged.slice(-8).join('\n')}`,
          );
        });
        process.stdout.write(
          `# ${outage}: calls, renewal and watch back ${callsBackMs.toFixed(0)} ms after the link returned; partition running again after ${(performance.now() - resumedAt).toFixed(0)} ms\n`,
        );
      });
    },
  );
}
