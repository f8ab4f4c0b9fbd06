/**
 * A link to etcd that is black-holed (both directions drop bytes, connections stay open, as behind a
 * dead router) and then resumes — without anyone resetting the connections — must not leave the etcd
 * engine hanging: unary calls, lease renewals and watches complete again within a bounded time, and a
 * partitioned instance whose session was lost meanwhile rejoins.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { isMusterError, isRetryable } from '../../src/errors.js';
import { joinPartitioned, type PartitionedHandle } from '../../src/partitions/index.js';
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

describe(
  'a black-holed link that resumes without a connection reset',
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
      const prefix = uniquePrefix('bh-resume');
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
      // Everything in use on the connection before the black hole: a watch, a lease, a session.
      const watch = client.watch('w', { fromRevision: (await client.headRevision()) + 1 });
      await client.put('w', 'before');
      await readUntil(watch, (ev) => ev.some((e) => text(e.kv.value) === 'before'));
      const lease = await client.grantLease(60);
      await client.keepAlive(lease.id);
      handle = await joinPartitioned(client, {
        service: 'bh',
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

      proxy.blackhole();
      // Requests in flight while the link is dark lose bytes mid-stream.
      const dark = await Promise.allSettled([
        client.put('w', 'dark'),
        client.keepAlive(lease.id),
        client.get('w'),
      ]);
      assert.ok(dark.every((r) => r.status === 'rejected'));
      // The session (3 s) is lost while dark.
      await until('session lost', performance.now() + 15_000, () => h.state === 'lost');
      proxy.pass(); // no cutAll(): the connections that lived through it stay open
      const deadline = performance.now() + RECOVERY_BOUND_MS;

      const t0 = performance.now();
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

      // The watch opened before the black hole delivers a write made after it.
      await observer.put('w', 'after');
      await readUntil(
        watch,
        (ev) => ev.some((e) => text(e.kv.value) === 'after'),
        Math.max(1, deadline - performance.now()),
      );
      watch.close();
      process.stdout.write(
        `# unary+renewal+watch recovered ${(performance.now() - t0).toFixed(0)} ms after resume\n`,
      );

      // The partitioned instance rejoins with a new session and runs its partition again.
      await until(
        'rejoined and reacquired',
        deadline + 5_000,
        () => h.state === 'active' && h.assumed.size === 1 && h.leaseId !== firstLease,
      ).catch((err: unknown) => {
        throw new Error(
          `${String(err)}; state ${h.state}, assumed ${h.assumed.size}\n${logged.slice(-12).join('\n')}`,
        );
      });
    });
  },
);
