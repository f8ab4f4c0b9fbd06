import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ManualClock } from '../../src/clock.js';
import { isMusterError } from '../../src/errors.js';
import { formatDuration, toMillis } from '../../src/util/duration.js';

test('ManualClock fires timers in deadline order, including timers armed by timers', () => {
  const clock = new ManualClock({ now: 1_000_000 });
  const fired: string[] = [];
  clock.setTimeout(() => fired.push('b@20'), 20);
  clock.setTimeout(() => {
    fired.push('a@10');
    clock.setTimeout(() => fired.push('c@15'), 5);
  }, 10);
  const cancelled = clock.setTimeout(() => fired.push('never'), 12);
  clock.clearTimeout(cancelled);
  clock.advance(30);
  assert.deepEqual(fired, ['a@10', 'c@15', 'b@20']);
  assert.equal(clock.monotonic(), 30);
  assert.equal(clock.now(), 1_000_030);
  clock.jumpWall(-5000);
  assert.equal(clock.now(), 995_030);
  assert.equal(clock.monotonic(), 30, 'a wall-clock jump does not move monotonic time');
});

test('ManualClock.sleep resolves on advance and rejects on abort', async () => {
  const clock = new ManualClock();
  let done = false;
  const p = clock.sleep(100).then(() => (done = true));
  await clock.tick(99);
  assert.equal(done, false);
  await clock.tick(1);
  await p;
  assert.equal(done, true);
  const ac = new AbortController();
  const aborted = clock.sleep(100, ac.signal);
  ac.abort();
  await assert.rejects(aborted, (err) => isMusterError(err, 'MUSTER_ABORTED'));
  assert.equal(clock.pendingTimers, 0);
});

test('durations parse from milliseconds and strings', () => {
  assert.equal(toMillis(250), 250);
  assert.equal(toMillis('250ms'), 250);
  assert.equal(toMillis('3s'), 3000);
  assert.equal(toMillis('1m30s'), 90_000);
  assert.equal(toMillis('1.5h'), 5_400_000);
  assert.equal(toMillis('42'), 42);
  for (const bad of ['', 'soon', '3 parsecs', '5x', -1, Number.NaN, '3s!']) {
    assert.throws(
      () => toMillis(bad),
      (err) => isMusterError(err, 'MUSTER_INVALID_ARGUMENT'),
      String(bad),
    );
  }
  assert.equal(formatDuration(250), '250ms');
  assert.equal(formatDuration(3000), '3s');
  assert.equal(formatDuration(90_000), '1m30s');
});
