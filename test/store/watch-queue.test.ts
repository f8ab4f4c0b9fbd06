import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { isMusterError } from '../../src/errors.js';
import type { WatchBatch } from '../../src/store/index.js';
import { WatchQueue } from '../../src/store/watch-queue.js';

const progress = (revision: number): WatchBatch => ({ type: 'progress', revision });

describe('WatchQueue', () => {
  test('queued batches come out in order; a waiting consumer gets the next push at once', async () => {
    const q = new WatchQueue();
    q.push(progress(1));
    q.push(progress(2));
    assert.equal(q.pending, 2);
    assert.deepEqual(await q.next(), { value: progress(1), done: false });
    assert.deepEqual(await q.next(), { value: progress(2), done: false });
    const waiting = q.next();
    q.push(progress(3));
    assert.equal(q.pending, 0);
    assert.deepEqual(await waiting, { value: progress(3), done: false });
  });

  test('with deferHandoff, a handed-over batch stays reachable through `last` until the microtask', async () => {
    const q = new WatchQueue({ deferHandoff: true });
    const waiting = q.next();
    q.push({ type: 'events', revision: 5, events: [] });
    const last = q.last;
    assert.equal(last?.type, 'events');
    if (last?.type === 'events') (last.events as unknown[]).push('joined');
    const r = await waiting;
    assert.equal(r.done, false);
    assert.deepEqual(r.value, { type: 'events', revision: 5, events: ['joined'] });
    assert.equal(q.last, undefined);
  });

  test('a failure is delivered after the queued batches; close discards them and ends at once', async () => {
    const failed = new WatchQueue();
    failed.push(progress(1));
    failed.fail(new Error('boom'));
    failed.push(progress(2)); // ignored once ended
    assert.deepEqual(await failed.next(), { value: progress(1), done: false });
    await assert.rejects(failed.next(), /boom/);

    const closed = new WatchQueue();
    closed.push(progress(1));
    closed.close();
    assert.deepEqual(await closed.next(), { value: undefined, done: true });
  });

  test('onEnd runs once, with `ended` already true, before the waiting consumer is settled', async () => {
    const seen: string[] = [];
    const q: WatchQueue = new WatchQueue({ onEnd: () => seen.push(`end ${String(q.ended)}`) });
    const waiting = q.next().then((r) => seen.push(`done ${String(r.done)}`));
    q.close();
    q.fail(new Error('late'));
    await waiting;
    assert.deepEqual(seen, ['end true', 'done true']);
  });

  test('a second concurrent consumer is refused; return() closes', async () => {
    const q = new WatchQueue();
    const first = q.next();
    await assert.rejects(q.next(), (err) => isMusterError(err, 'MUSTER_INVALID_ARGUMENT'));
    assert.deepEqual(await q.return(), { value: undefined, done: true });
    assert.deepEqual(await first, { value: undefined, done: true });
    assert.equal(q.ended, true);
  });
});
