import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ManualClock } from '../../src/clock.js';
import { isMusterError, type MusterError } from '../../src/errors.js';
import {
  DEFAULT_CLOCK_RATE_ERROR_PPM,
  DEFAULT_MIN_SAFETY_MARGIN_MS,
  openSession,
  safetyMargin,
} from '../../src/membership/index.js';
import { MemoryStore } from '../../src/store/index.js';
import { FaultyStore } from '../../src/testing/index.js';

function setup(): { clock: ManualClock; mem: MemoryStore; store: FaultyStore } {
  const clock = new ManualClock();
  const mem = new MemoryStore({ clock });
  return { clock, mem, store: new FaultyStore(mem, { clock }) };
}

describe('session (memory engine, manual clock)', () => {
  test('TTL 0, below 1 s, negative or malformed: MUSTER_INVALID_ARGUMENT and no lease granted', async () => {
    const { mem, clock } = setup();
    for (const ttl of [0, 999, '500ms', -1, 'soon', Number.NaN, '2y']) {
      await assert.rejects(
        openSession(mem, { ttl, clock }),
        (err) => isMusterError(err, 'MUSTER_INVALID_ARGUMENT'),
        `ttl ${String(ttl)}`,
      );
    }
    await assert.rejects(openSession(mem, { ttl: '3s', keepAliveInterval: '3s', clock }), (err) =>
      isMusterError(err, 'MUSTER_INVALID_ARGUMENT'),
    );
    assert.deepEqual(mem.leaseIds(), []);
  });

  test('defaults: 3 s TTL, keep-alive every 1 s, a 100 ms margin', async () => {
    const { mem, clock } = setup();
    const s = await openSession(mem, { clock });
    assert.equal(s.ttlMs, 3000);
    assert.equal(s.keepAliveIntervalMs, 1000);
    assert.equal(s.safetyMarginMs, 100);
    assert.equal(s.state, 'active');
    assert.equal(safetyMargin(3_600_000, DEFAULT_CLOCK_RATE_ERROR_PPM, DEFAULT_MIN_SAFETY_MARGIN_MS), 3600);
    await s.close();
  });

  test('TTLs of hours and days: keep-alives every TTL/3, timers beyond 24.8 days re-armed, no busy loop', async () => {
    const { mem, clock } = setup();
    const hour = await openSession(mem, { ttl: '1h', clock });
    assert.equal(hour.keepAliveIntervalMs, 1_200_000);
    assert.equal(hour.safetyMarginMs, 3600);
    const long = await openSession(mem, { ttl: '100d', clock });
    await clock.tick(30 * 86_400_000, 600_000); // 30 days in 10-minute steps
    assert.equal(long.state, 'active');
    assert.equal(hour.state, 'active');
    assert.ok(hour.renewals >= 30 * 72 - 1, `hour renewals: ${hour.renewals}`);
    assert.ok(clock.pendingTimers < 10, `timers pending: ${clock.pendingTimers}`);
    await Promise.all([hour.close(), long.close()]);
  });

  test('a TTL in ms is rounded up to whole seconds: 1500ms → 2 s', async () => {
    const { mem, clock } = setup();
    const s = await openSession(mem, { ttl: '1500ms', clock });
    assert.equal(s.ttlMs, 2000);
    assert.equal((await mem.leaseTimeToLive(s.leaseId))?.grantedTtlSeconds, 2);
    await s.close();
  });

  for (let ttl = 1; ttl <= 10; ttl++) {
    test(`TTL ${ttl} s: deadline = last ack's send time + TTL − margin; black-holed keep-alives lose the session before the store expires the lease`, async () => {
      const { clock, mem, store } = setup();
      const t0 = clock.monotonic();
      const s = await openSession(store, { ttl: `${ttl}s`, clock });
      const margin = safetyMargin(ttl * 1000, DEFAULT_CLOCK_RATE_ERROR_PPM, DEFAULT_MIN_SAFETY_MARGIN_MS);
      assert.equal(s.safetyMarginMs, margin);
      assert.equal(s.deadline(), t0 + ttl * 1000 - margin);
      await mem.put('/k', 'v', { lease: s.leaseId });
      let lostAt: number | undefined;
      let lostErr: MusterError | undefined;
      s.on('lost', (err) => {
        lostAt = clock.monotonic();
        lostErr = err;
      });
      let expiredAt: number | undefined;
      const w = mem.watch('/k');
      const consumer = (async () => {
        for await (const b of w) {
          if (b.type === 'events' && b.events.some((e) => e.type === 'delete')) {
            expiredAt = clock.monotonic();
            return;
          }
        }
      })();

      // Healthy: keep-alives every TTL/3, the deadline follows each acknowledgement.
      const step = 5;
      await clock.tick(ttl * 2000, step);
      const interval = Math.floor((ttl * 1000) / 3);
      assert.equal(s.keepAliveIntervalMs, interval);
      assert.equal(s.renewals, Math.floor((ttl * 2000) / interval));
      const lastAck = store.lastAckedSentAt as number;
      assert.equal(s.deadline(), lastAck + ttl * 1000 - margin);
      assert.equal(s.state, 'active');

      // Black hole: nothing is acknowledged any more.
      store.blackholeKeepAlives = true;
      const expectedDeadline = s.deadline();
      while (expiredAt === undefined) await clock.tick(step);
      await consumer;
      w.close();
      assert.ok(lostAt !== undefined, 'lost fired');
      assert.equal(lostAt, expectedDeadline, 'lost fires exactly at the deadline');
      assert.ok(lostAt < expiredAt, `lost (${lostAt}) before the store expired the lease (${expiredAt})`);
      assert.ok(expiredAt >= lastAck + ttl * 1000, 'the store expired the lease no earlier than ack + TTL');
      assert.equal(s.state, 'lost');
      assert.equal(s.lost.aborted, true);
      assert.equal((s.lost.reason as MusterError).code, 'MUSTER_SESSION_LOST');
      assert.equal(lostErr?.code, 'MUSTER_SESSION_LOST');
      assert.equal(s.isValid(), false);
      assert.throws(
        () => s.throwIfInvalid(),
        (err) => isMusterError(err, 'MUSTER_SESSION_LOST'),
      );
      await s.close();
      assert.equal(s.state, 'lost', 'closing a lost session keeps it lost');
    });
  }

  test('a keep-alive answered with MUSTER_LEASE_NOT_FOUND loses the session at once (never re-created)', async () => {
    const { clock, mem } = setup();
    const s = await openSession(mem, { ttl: '3s', clock });
    await mem.revokeLease(s.leaseId);
    await clock.tick(1000, 10);
    assert.equal(s.state, 'lost');
    const reason = s.lost.reason as MusterError;
    assert.equal(reason.code, 'MUSTER_SESSION_LOST');
    assert.ok(isMusterError(reason.cause, 'MUSTER_LEASE_NOT_FOUND'));
    assert.deepEqual(mem.leaseIds(), [], 'no new lease was granted');
    assert.ok(clock.monotonic() < s.ttlMs, 'lost long before the deadline');
  });

  test('an acknowledgement that arrives after the deadline does not revive the session', async () => {
    const { clock, store } = setup();
    const s = await openSession(store, { ttl: '3s', clock });
    store.keepAliveDelayMs = 2500; // the first keep-alive (sent at 1 s) is answered at 3.5 s
    let renewed = 0;
    s.on('renewed', () => renewed++);
    await clock.tick(4000, 10);
    assert.equal(renewed, 0);
    assert.equal(s.state, 'lost');
  });

  test('slow acknowledgements extend the deadline from their send time, not their arrival', async () => {
    const { clock, store } = setup();
    const s = await openSession(store, { ttl: '3s', clock });
    store.keepAliveDelayMs = 300;
    const sends: number[] = [];
    const acks: number[] = [];
    s.on('renewed', () => acks.push(clock.monotonic()));
    await clock.tick(1000, 10);
    sends.push(clock.monotonic());
    await clock.tick(400, 10);
    assert.equal(acks.length, 1);
    assert.equal(s.deadline(), (sends[0] as number) + 3000 - s.safetyMarginMs);
    await s.close();
  });

  test('a stalled event loop (time jumps past the deadline in one go) loses the session', async () => {
    const { clock, mem } = setup();
    const s = await openSession(mem, { ttl: '2s', clock });
    clock.advance(5000);
    assert.equal(s.state, 'lost');
    await s.close();
  });

  test('close() revokes the lease at once, aborts lost with MUSTER_CLOSED, is idempotent, leaves no timers', async () => {
    const { clock, mem } = setup();
    const s = await openSession(mem, { ttl: '3s', clock });
    await mem.put('/k', 'v', { lease: s.leaseId });
    let closed = 0;
    let lost = 0;
    s.on('closed', () => closed++);
    s.on('lost', () => lost++);
    await Promise.all([s.close(), s.close()]);
    await s.close();
    assert.equal(s.state, 'closed');
    assert.equal(closed, 1);
    assert.equal(lost, 0);
    assert.equal((s.lost.reason as MusterError).code, 'MUSTER_CLOSED');
    assert.deepEqual(mem.leaseIds(), []);
    assert.equal(await mem.get('/k'), undefined);
    await mem.close(); // drops the engine's own expiry timer
    assert.equal(clock.pendingTimers, 0, 'the session left no timer behind');
  });

  test('aborting the signal after opening closes the session; aborting before rejects MUSTER_ABORTED', async () => {
    const { clock, mem } = setup();
    const ac = new AbortController();
    const s = await openSession(mem, { clock, signal: ac.signal });
    ac.abort();
    await s.close();
    assert.equal(s.state, 'closed');
    assert.deepEqual(mem.leaseIds(), []);
    await assert.rejects(openSession(mem, { clock, signal: AbortSignal.abort() }), (err) =>
      isMusterError(err, 'MUSTER_ABORTED'),
    );
    await using s2 = await openSession(mem, { clock });
    assert.equal(s2.state, 'active');
  });

  test('a throwing listener does not break the keep-alive loop', async () => {
    const { clock, mem } = setup();
    const s = await openSession(mem, { ttl: '3s', clock });
    const warnings: string[] = [];
    const onWarning = (w: Error): void => void warnings.push(w.message);
    process.on('warning', onWarning);
    s.on('renewed', () => {
      throw new Error('listener bug');
    });
    await clock.tick(5000, 10);
    process.off('warning', onWarning);
    assert.equal(s.state, 'active');
    assert.ok(s.renewals >= 4);
    await s.close();
  });
});
