/**
 * The etcd member breaker's state machine (src/store/etcd/breaker.ts) on explicit times: one probe
 * at a time when half-open, its outcome decides, a late outcome of an older call never counts as the
 * probe's, and the open delay doubles to its cap. (The same on a real etcd behind black-holed
 * proxies: etcd-reconnect.test.ts.)
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { BREAKER_BACKOFF, BREAKER_FAILURES, Breaker } from '../../src/store/etcd/breaker.js';

/** A breaker without jitter (random() = 0: every delay is its full value). */
const breaker = (): Breaker => new Breaker(() => 0);

/** Opens `b` at time `now` with BREAKER_FAILURES failed calls. */
function open(b: Breaker, now: number): void {
  for (let i = 0; i < BREAKER_FAILURES; i++) b.settle(b.admit(now)!, false, now);
}

describe('etcd member breaker', () => {
  test('opens after BREAKER_FAILURES failures in a row; a success in between resets the count', () => {
    const b = breaker();
    b.settle(b.admit(0)!, false, 0);
    b.settle(b.admit(0)!, false, 0);
    b.settle(b.admit(0)!, true, 0);
    assert.equal(b.failures, 0);
    open(b, 10);
    assert.equal(b.state(10), 'open');
    assert.equal(b.admit(10), undefined, 'open: no call goes');
    assert.equal(b.openUntil, 10 + BREAKER_BACKOFF.initialMs);
  });

  test('half-open admits exactly one probe until it settles', () => {
    const b = breaker();
    open(b, 0);
    const t = BREAKER_BACKOFF.initialMs;
    assert.equal(b.state(t), 'half-open');
    const probe = b.admit(t);
    assert.equal(probe?.probe, true);
    for (let i = 0; i < 5; i++)
      assert.equal(b.admit(t + i), undefined, 'a second call while the probe is out');
    b.settle(probe, true, t + 5);
    assert.equal(b.state(t + 5), 'closed');
    assert.equal(b.admit(t + 5)?.probe, false);
  });

  test('a failed probe re-opens for twice the delay, up to the cap; a success starts over', () => {
    const b = breaker();
    open(b, 0);
    let now = 0;
    let delay = BREAKER_BACKOFF.initialMs;
    for (let i = 0; i < 6; i++) {
      now = b.openUntil;
      const probe = b.admit(now)!;
      b.settle(probe, false, now);
      delay = Math.min(BREAKER_BACKOFF.maxMs, delay * 2);
      assert.equal(b.openUntil, now + delay, `opening ${i + 2}`);
    }
    assert.equal(delay, BREAKER_BACKOFF.maxMs);
    now = b.openUntil;
    b.settle(b.admit(now)!, true, now);
    open(b, now);
    assert.equal(b.openUntil, now + BREAKER_BACKOFF.initialMs, 'after a success the delay starts over');
  });

  test('a probe without a verdict frees the slot; a late failure of an older call is not the probe', () => {
    const b = breaker();
    const old = b.admit(0)!; // sent while closed, settles late
    open(b, 0);
    const t = BREAKER_BACKOFF.initialMs;
    const probe = b.admit(t)!;
    b.settle(old, false, t);
    assert.equal(b.state(t), 'half-open', 'the older call failing did not re-open it');
    assert.equal(b.admit(t), undefined, 'and the probe is still out');
    b.settle(probe, undefined, t); // e.g. cancelled by its caller
    const next = b.admit(t);
    assert.equal(next?.probe, true, 'the slot is free again');
    b.settle(probe, false, t);
    assert.equal(b.state(t), 'half-open', 'an attempt counts once');
  });

  test('jitter shortens a delay by at most its share', () => {
    const b = new Breaker(() => 0.999);
    open(b, 0);
    const min = BREAKER_BACKOFF.initialMs * (1 - BREAKER_BACKOFF.jitter);
    assert.ok(b.openUntil >= min && b.openUntil < BREAKER_BACKOFF.initialMs, String(b.openUntil));
  });
});
