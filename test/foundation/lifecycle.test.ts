/**
 * Lifecycle rules every long-lived handle follows (issue 14 §4): an already-aborted signal is honoured
 * (a listener added to an aborted signal never runs, so each constructor must check first), close() is
 * async and idempotent, and PartitionedHandle has a force path for work that ignores its signal.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ManualClock } from '../../src/clock.js';
import { openConfig } from '../../src/config/index.js';
import { isMusterError } from '../../src/errors.js';
import { joinPartitioned } from '../../src/partitions/index.js';
import { MemoryStore } from '../../src/store/index.js';
import { abortable, onAbort } from '../../src/util/abort.js';
import { code, setup } from '../config/setup.js';

const aborted = (): AbortSignal => AbortSignal.abort(new Error('gone'));

describe('AbortSignal helper (src/util/abort.ts)', { timeout: 10_000 }, () => {
  test('onAbort runs at once for an aborted signal and removes its listener otherwise', () => {
    let calls = 0;
    onAbort(aborted(), () => calls++);
    assert.equal(calls, 1);
    const c = new AbortController();
    const off = onAbort(c.signal, () => calls++);
    off();
    c.abort();
    assert.equal(calls, 1, 'a removed listener does not run');
    onAbort(undefined, () => calls++)();
    assert.equal(calls, 1);
  });

  test('abortable rejects MUSTER_ABORTED for an aborted signal, else settles like the promise', async () => {
    await assert.rejects(abortable(new Promise(() => undefined), aborted()), code('MUSTER_ABORTED'));
    assert.equal(await abortable(Promise.resolve(7), new AbortController().signal), 7);
    const c = new AbortController();
    const pending = abortable(new Promise(() => undefined), c.signal);
    c.abort();
    await assert.rejects(pending, code('MUSTER_ABORTED'));
  });
});

describe('an already-aborted signal is honoured', { timeout: 30_000 }, () => {
  test('openConfig with an aborted signal gives a closed handle', async () => {
    const { clock, store } = await setup();
    const handle = openConfig(store, 'demo', { clock, signal: aborted() });
    try {
      assert.equal(handle.state, 'closed');
      await assert.rejects(handle.ready(), (err: unknown) => isMusterError(err));
    } finally {
      await handle.close();
      await store.close();
    }
  });

  test('joinPartitioned with an aborted signal rejects MUSTER_ABORTED and registers nothing', async () => {
    const clock = new ManualClock();
    const store = new MemoryStore({ clock });
    try {
      await assert.rejects(
        joinPartitioned(store, {
          service: 'svc',
          id: 'a',
          partitions: 4,
          clock,
          signal: aborted(),
          onAcquire: async () => undefined,
        }),
        code('MUSTER_ABORTED'),
      );
      const { kvs } = await store.range({ prefix: '/muster/services/svc/instances/' });
      assert.deepEqual(kvs, []);
    } finally {
      await store.close();
    }
  });
});

describe('PartitionedHandle close({ force })', { timeout: 30_000 }, () => {
  test('force returns although the work ignores its signal; a graceful close keeps waiting', async () => {
    const clock = new ManualClock();
    const store = new MemoryStore({ clock });
    let started = false;
    const handle = await joinPartitioned(store, {
      service: 'svc',
      id: 'a',
      partitions: 1,
      clock,
      stopTimeout: 100,
      onAcquire: () => {
        started = true;
        return new Promise<void>(() => undefined); // ignores its signal: never stops
      },
    });
    try {
      let stopTimedOut = false;
      handle.on('error', (err) => {
        if ((err as { code?: string }).code === 'MUSTER_STOP_TIMEOUT') stopTimedOut = true;
      });
      // The acquisition may wait on the manual clock (a first placement computation slower than
      // THROTTLE_ABOVE_MS, as on a cold CI machine, schedules the next one on it): let it run.
      for (let i = 0; !started && i < 500; i++) {
        clock.advance(10);
        await new Promise((r) => setImmediate(r));
      }
      assert.ok(started, 'the partition was acquired');
      let closed = false;
      const graceful = handle.close().then(() => (closed = true));
      // Past the stop timeout (armed once the partition is marked moving): still waiting for the work.
      for (let i = 0; !stopTimedOut && i < 500; i++) {
        clock.advance(10);
        await new Promise((r) => setImmediate(r));
      }
      assert.ok(stopTimedOut, 'the stop timed out');
      assert.equal(closed, false, 'a graceful close waits for the work');
      await handle.close({ force: true });
      await graceful;
      assert.equal(handle.state, 'closed');
    } finally {
      await store.close();
    }
  });
});
