/**
 * The etcd client's reconnect back-off and circuit breaker, on a real etcd behind fault proxies.
 *
 * - A member that refuses: the channel dials again only after a capped, jittered, doubling back-off
 *   (counted as connections the proxy accepts), while calls fail at once with `MUSTER_UNAVAILABLE`;
 *   the back-off starts again from its first delay after a connection worked.
 * - Every endpoint refusing (no etcd needed): calls fail at once with `MUSTER_UNAVAILABLE`, never
 *   `MUSTER_TIMEOUT`, and each endpoint is dialled a handful of times, not once per call (with
 *   several endpoints the breakers bound this as much as the back-off does: a guard, which the code
 *   before the back-off passed too).
 * - Two endpoints, both black-holed: once both breakers are open, calls fail at once with
 *   `NoEndpointError`; a half-open breaker lets exactly one probe through (the other calls fail at
 *   once), re-opens for a doubled delay when the probe fails, and closes when a probe succeeds after
 *   the link returns.
 * - A member that accepts TCP but never sends HTTP/2 SETTINGS (a frozen etcd; the proxy's black
 *   hole): the channel gives the attempt up by itself after its connect timeout — no call deadline
 *   involved — and backs off; with a second, healthy member, reads go there.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, test } from 'node:test';
import { openEtcdStore } from '../../src/store/etcd/index.js';
import { GRPC_KEEPALIVE_MS } from '../../src/store/etcd/etcd-store.js';
import { BREAKER_BACKOFF } from '../../src/store/etcd/breaker.js';
import { EtcdClient, type Member, NoEndpointError } from '../../src/store/etcd/client.js';
import {
  BackoffError,
  GrpcChannel,
  GrpcError,
  RECONNECT_BACKOFF,
  Status,
} from '../../src/store/etcd/grpc.js';
import { decode, encode } from '../../src/store/etcd/rpc-codec.js';
import {
  ETCD_INSTALL_HINT,
  freePort,
  needBinary,
  startEtcd,
  startFaultProxy,
} from '../../src/testing/index.js';
import { uniquePrefix } from './etcd-helpers.js';

const skip = needBinary('etcd', ETCD_INSTALL_HINT);

/** The delay before reconnect attempt `n + 1` after `n` failed ones, without jitter. */
const fullDelay = (n: number): number =>
  Math.min(RECONNECT_BACKOFF.maxMs, RECONNECT_BACKOFF.initialMs * 2 ** (n - 1));

/** Polls `cond` every 5 ms; rejects after `timeoutMs` with `what`. */
async function until(cond: () => boolean, what: string, timeoutMs = 20_000): Promise<void> {
  const end = performance.now() + timeoutMs;
  while (!cond()) {
    if (performance.now() > end) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await sleep(5);
  }
}

describe('etcd client: every endpoint refusing', () => {
  test(
    'calls fail at once with MUSTER_UNAVAILABLE; each endpoint is dialled on its back-off',
    { timeout: 60_000 },
    async () => {
      // Two proxies in front of ports nothing listens on: each accepts, then closes (a refusal the
      // proxy can count).
      await using p1 = await startFaultProxy({ target: `127.0.0.1:${await freePort()}` });
      await using p2 = await startFaultProxy({ target: `127.0.0.1:${await freePort()}` });
      const store = openEtcdStore(`etcd://${p1.endpoint},${p2.endpoint}`, { requestTimeout: '10s' });
      try {
        const started = performance.now();
        const calls = 300;
        for (let i = 0; i < calls; i++) {
          const op = i % 2 === 0 ? store.get('k') : store.put('k', 'v');
          await op.then(
            () => assert.fail('a call succeeded with no etcd'),
            (err: unknown) =>
              assert.equal((err as { code?: string }).code, 'MUSTER_UNAVAILABLE', String(err)),
          );
          await sleep(1);
        }
        const elapsed = performance.now() - started;
        // At most 1 + k dials per endpoint, where the first k − 1 shortest back-off delays fit in
        // the time the calls took (plus one for a dial that the breaker's half-open probe made).
        let k = 1;
        for (let spent = 0; ; k++) {
          spent += fullDelay(k) * (1 - RECONNECT_BACKOFF.jitter);
          if (spent > elapsed) break;
        }
        const dials = [p1.accepted, p2.accepted];
        process.stdout.write(
          `# every endpoint refusing: ${calls} calls in ${elapsed.toFixed(0)} ms, dials ${dials.join(' + ')}\n`,
        );
        for (const d of dials)
          assert.ok(d >= 1 && d <= k + 2, `dials ${dials.join(', ')}, at most ${k + 2} each`);
      } finally {
        await store.close();
      }
    },
  );
});

describe('etcd client: reconnect back-off and circuit breaker (real etcd)', { skip }, () => {
  test(
    'a refusing member is dialled on a capped, jittered, doubling back-off; calls fail at once meanwhile',
    { timeout: 90_000 },
    async () => {
      await using cluster = await startEtcd();
      await using proxy = await startFaultProxy({ target: cluster.endpoints[0]! });
      const store = openEtcdStore(`etcd://${proxy.endpoint}`, {
        keyPrefix: uniquePrefix('backoff'),
        requestTimeout: '3s',
      });
      try {
        await store.put('k', '1');
        const member = cluster.members[0]!;

        /**
         * Calls `get` (a failure must be MUSTER_UNAVAILABLE) until the proxy has accepted `attempts`
         * more connections; returns when each was seen and how many calls were made.
         */
        const hammer = async (attempts: number): Promise<{ at: number[]; calls: number }> => {
          const base = proxy.accepted;
          const at: number[] = [];
          let calls = 0;
          while (proxy.accepted - base < attempts) {
            calls++;
            await store.get('k').then(
              () => assert.fail('a get succeeded while etcd was stopped'),
              (err: unknown) =>
                assert.equal((err as { code?: string }).code, 'MUSTER_UNAVAILABLE', String(err)),
            );
            while (at.length < proxy.accepted - base) at.push(performance.now());
            if (calls > 100_000) assert.fail(`no ${attempts} connection attempts after ${calls} calls`);
            await sleep(1);
          }
          return { at, calls };
        };
        /** Checks gap i (between attempts i and i + 1) against the back-off after i + `failedBefore` failures. */
        const checkGaps = (at: readonly number[], failedBefore: number): string[] => {
          const report: string[] = [];
          for (let i = 1; i < at.length; i++) {
            const gap = at[i]! - at[i - 1]!;
            const full = fullDelay(i + failedBefore);
            report.push(
              `${gap.toFixed(0)} ms (back-off ${(full * (1 - RECONNECT_BACKOFF.jitter)).toFixed(0)}–${full})`,
            );
            // Each dial is seen by the polling loop a little after it happened, by up to one stalled
            // turn of the event loop on a loaded machine: 40 ms of slack (without back-off, gaps are 0).
            assert.ok(gap >= full * (1 - RECONNECT_BACKOFF.jitter) - 40, `gap ${i}: ${report.join(', ')}`);
            assert.ok(gap <= full + 1500, `gap ${i} far past its back-off: ${report.join(', ')}`);
          }
          return report;
        };

        await member.stop(); // the proxy now accepts and closes every connection: a refusal
        const first = await hammer(7);
        const gaps = checkGaps(first.at, 0);
        process.stdout.write(`# refused: ${first.calls} calls, 7 dials, gaps ${gaps.join(', ')}\n`);
        assert.ok(first.calls >= 3 * 7, `${first.calls} calls for 7 dials: the calls dialled themselves`);

        // It reconnects when etcd returns, and the back-off starts again from its first delay.
        await member.restart();
        await cluster.waitReady();
        let back = false;
        for (let i = 0; i < 10_000 && !back; i++) {
          back = await store.get('k').then(
            () => true,
            () => false,
          );
          if (!back) await sleep(5);
        }
        assert.ok(back, 'the store works again after etcd returned');
        await member.stop();
        const again = await hammer(3);
        // The first dial after a working connection is immediate (not timed here); the next ones
        // follow the back-off from its first delay again, not from where it stood before.
        checkGaps(again.at, 0);
      } finally {
        await store.close();
      }
    },
  );

  test(
    'a half-open breaker lets one probe through: fails and re-opens while black-holed, closes on recovery',
    { timeout: 90_000 },
    async () => {
      await using cluster = await startEtcd();
      await using p1 = await startFaultProxy({ target: cluster.endpoints[0]! });
      await using p2 = await startFaultProxy({ target: cluster.endpoints[0]! });
      const client = new EtcdClient({
        endpoints: [p1.endpoint, p2.endpoint],
        keepAliveMs: 6000,
        keepAliveTimeoutMs: 2000,
        requestTimeoutMs: 1000,
      });
      const call = (deadlineMs = 300): Promise<unknown> =>
        client.unary('/etcdserverpb.Maintenance/Status', encode.empty(), decode.status, {
          deadline: Date.now() + deadlineMs,
        });
      const eligible = (): Member[] =>
        client.members.filter((m) => m.refusal(performance.now(), true) === undefined);
      /** Fires `n` calls in one tick; returns their outcomes in the order they settled. */
      const burst = async (n: number): Promise<('ok' | 'rejected' | 'failed')[]> => {
        const order: ('ok' | 'rejected' | 'failed')[] = [];
        await Promise.all(
          Array.from({ length: n }, () =>
            call().then(
              () => order.push('ok'),
              (err: unknown) => order.push(err instanceof NoEndpointError ? 'rejected' : 'failed'),
            ),
          ),
        );
        return order;
      };
      try {
        await call(5000);
        p1.blackhole();
        p2.blackhole();
        // Calls time out until both breakers are open (3 failures each).
        for (let i = 0; i < 60 && !client.members.every((m) => m.state === 'open'); i++) {
          await call().then(
            () => assert.fail('a call succeeded through a black hole'),
            (err: unknown) => assert.ok(err instanceof GrpcError, String(err)),
          );
        }
        assert.deepEqual(
          client.members.map((m) => m.state),
          ['open', 'open'],
        );
        // Open everywhere: a call fails at once, nothing sent.
        await assert.rejects(call(), (err: unknown) => {
          assert.ok(err instanceof NoEndpointError);
          assert.equal(err.neverSent, true);
          assert.match(err.message, /breaker open/);
          return true;
        });

        // Half-open, still black-holed: one probe per eligible member goes; the rest fail at once.
        await until(() => eligible().length > 0, 'a breaker turned half-open');
        const probed = eligible();
        assert.ok(probed.every((m) => m.state === 'half-open'));
        const order = await burst(10);
        const probes = order.filter((o) => o !== 'rejected').length;
        assert.equal(probes, probed.length, `outcomes in order: ${order.join(', ')}`);
        assert.deepEqual(
          order.slice(0, 10 - probes),
          Array(10 - probes).fill('rejected'),
          'rejections came first',
        );
        assert.ok(order.slice(10 - probes).every((o) => o === 'failed'));
        // The failed probe re-opened its breaker for a doubled delay.
        for (const m of probed) {
          assert.equal(m.state, 'open');
          const left = m.breaker.openUntil - performance.now();
          const min = 2 * BREAKER_BACKOFF.initialMs * (1 - BREAKER_BACKOFF.jitter);
          assert.ok(left >= min - 50, `re-opened for ${left.toFixed(0)} ms, expected ≥ ${min}`);
        }

        // The link returns: the next probe succeeds and closes the breaker; then every call goes.
        p1.pass();
        p2.pass();
        await until(() => eligible().length > 0, 'a breaker turned half-open again');
        const recovering = eligible();
        assert.ok(recovering.every((m) => m.state === 'half-open'));
        const second = await burst(10);
        const through = second.filter((o) => o !== 'rejected');
        assert.deepEqual(through, Array(recovering.length).fill('ok'), `outcomes: ${second.join(', ')}`);
        assert.deepEqual(
          recovering.map((m) => m.state),
          recovering.map(() => 'closed'),
        );
        const all = await burst(10);
        assert.deepEqual(all, Array(10).fill('ok'));
      } finally {
        client.close();
      }
    },
  );
});

describe('etcd client: connect timeout (real etcd)', { skip }, () => {
  test(
    'an attempt that gets no SETTINGS is destroyed after the connect timeout and backs off, with no call deadline',
    { timeout: 60_000 },
    async () => {
      await using cluster = await startEtcd();
      await using proxy = await startFaultProxy({ target: cluster.endpoints[0]! });
      proxy.blackhole(); // TCP is accepted, no byte passes: etcd's SETTINGS never arrive
      const connectTimeoutMs = 300;
      const channel = new GrpcChannel({
        endpoint: proxy.endpoint,
        keepAliveMs: 6000,
        keepAliveTimeoutMs: 2000,
        connectTimeoutMs,
        // A long back-off, so that the state can be read after the attempt failed.
        reconnect: { initialMs: 60_000, maxMs: 60_000, jitter: 0 },
      });
      try {
        const started = performance.now();
        // A stream has no deadline: only the connect timeout can end this attempt.
        const stream = channel.stream(
          '/etcdserverpb.Lease/LeaseKeepAlive',
          encode.leaseId,
          decode.leaseKeepAlive,
        );
        const failed = once(stream, 'error') as Promise<[GrpcError]>;
        assert.equal(channel.state, 'connecting');
        const [err] = await failed;
        const elapsed = performance.now() - started;
        assert.equal(proxy.accepted, 1, 'the TCP connection was accepted');
        assert.ok(err instanceof GrpcError, String(err));
        assert.equal(err.code, Status.UNAVAILABLE, String(err));
        assert.match(err.message, /connect timeout/);
        assert.ok(elapsed >= connectTimeoutMs - 5, `gave up after ${elapsed.toFixed(0)} ms`);
        // The client destroyed the connection (the proxy sees it closed) and counts a failed attempt.
        await until(() => proxy.connections === 0, 'the proxy saw the connection closed');
        assert.equal(channel.state, 'backing-off');
        assert.equal(channel.failedAttempts, 1);
        // Meanwhile a call fails at once, never sent, saying why the last attempt failed.
        await assert.rejects(
          channel.unary('/etcdserverpb.Maintenance/Status', encode.empty(), decode.status, {
            deadline: Date.now() + 60_000,
          }),
          (e: unknown) => e instanceof BackoffError && e.neverSent && /connect timeout/.test(e.message),
        );
        assert.equal(proxy.accepted, 1, 'no new dial during the back-off');
        process.stdout.write(
          `# connect timeout ${connectTimeoutMs} ms: attempt given up after ${elapsed.toFixed(0)} ms\n`,
        );
      } finally {
        channel.close();
      }
    },
  );

  test(
    'with a second, healthy member, reads go there instead of waiting for their deadline',
    { timeout: 60_000 },
    async () => {
      await using cluster = await startEtcd();
      await using frozen = await startFaultProxy({ target: cluster.endpoints[0]! });
      await using healthy = await startFaultProxy({ target: cluster.endpoints[0]! });
      frozen.blackhole();
      // A request deadline far beyond the test's timeout: no call may wait for it.
      const store = openEtcdStore(`etcd://${frozen.endpoint},${healthy.endpoint}`, {
        keyPrefix: uniquePrefix('connect-timeout'),
        requestTimeout: '10m',
        connectTimeout: '300ms',
      });
      try {
        // Until one read was sent to the frozen member (members are picked at random), then a few
        // more: every read succeeds, the one that met the frozen member on its retry elsewhere.
        // Without a connect timeout, the read that met the frozen member would wait for the
        // keep-alive ping to go unanswered (GRPC_KEEPALIVE_MS + 2 s) before its retry elsewhere.
        let calls = 0;
        let after = 0;
        let slowest = 0;
        while (after < 20) {
          if (++calls > 2000) assert.fail('no read was sent to the frozen member');
          const started = performance.now();
          assert.equal(await store.get('k'), undefined);
          slowest = Math.max(slowest, performance.now() - started);
          if (frozen.accepted > 0) after++;
        }
        process.stdout.write(
          `# frozen member + healthy member: ${calls} reads, slowest ${slowest.toFixed(0)} ms\n`,
        );
        assert.ok(slowest < GRPC_KEEPALIVE_MS, `a read took ${slowest.toFixed(0)} ms`);
        await until(() => frozen.connections === 0, "the frozen member's connection was given up");
        assert.equal(frozen.accepted, 1, 'the frozen member is skipped while it backs off');
        assert.ok(healthy.accepted >= 1);
      } finally {
        await store.close();
      }
    },
  );
});
