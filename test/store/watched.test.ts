import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { flushMicrotasks, ManualClock } from '../../src/clock.js';
import { isMusterError, MusterError } from '../../src/errors.js';
import {
  type KeyValue,
  MemoryStore,
  type SourceWatch,
  type WatchBatch,
  type WatchedChange,
  type WatchSource,
  textOf,
  watchPrefix,
} from '../../src/store/index.js';

/** Applies changes as a consumer should: a reset replaces everything. */
class Replica {
  readonly map = new Map<string, string>();
  revision = 0;
  resets = 0;
  apply(c: WatchedChange): void {
    if (c.type === 'reset') {
      this.resets++;
      this.map.clear();
      for (const kv of c.kvs) this.map.set(kv.key, textOf(kv.value));
    } else if (c.type === 'events') {
      for (const e of c.events) {
        assert.ok(e.kv.modRevision > this.revision, 'events arrive in revision order, no duplicates');
        if (e.type === 'put') this.map.set(e.kv.key, textOf(e.kv.value));
        else this.map.delete(e.kv.key);
      }
    }
    assert.ok(c.revision >= this.revision || c.type === 'reset', 'the revision never goes back');
    this.revision = c.revision;
  }
}

async function content(store: MemoryStore, prefix: string): Promise<Map<string, string>> {
  const r = await store.range(prefix);
  return new Map(r.kvs.map((kv: KeyValue) => [kv.key, textOf(kv.value)]));
}

async function until(what: string, check: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setImmediate(r));
  }
}

/** A source over a store whose watches can be made to fail: `breakNext(err)` fails the live one. */
class FlakySource implements WatchSource {
  readonly store: MemoryStore;
  failLists = 0;
  listCalls = 0;
  #live: { fail: (err: unknown) => void } | undefined;
  constructor(store: MemoryStore) {
    this.store = store;
  }
  async range(
    prefix: string,
    options: { signal?: AbortSignal },
  ): Promise<{ kvs: KeyValue[]; revision: number }> {
    this.listCalls++;
    if (this.failLists > 0) {
      this.failLists--;
      throw new MusterError('MUSTER_UNAVAILABLE', 'store unreachable (test)');
    }
    const r = await this.store.range(prefix, options);
    return { kvs: [...r.kvs], revision: r.revision };
  }
  watch(prefix: string, options: { fromRevision?: number }): SourceWatch {
    const inner = this.store.watch(prefix, options);
    let fail: ((err: unknown) => void) | undefined;
    const failed = new Promise<never>((_, reject) => (fail = reject));
    failed.catch(() => undefined);
    this.#live = { fail: (err) => fail?.(err) };
    const it = inner[Symbol.asyncIterator]();
    return {
      requestProgress: () => inner.requestProgress(),
      close: () => inner.close(),
      [Symbol.asyncIterator]: () => ({
        next: () => Promise.race([it.next(), failed]),
        return: async () => {
          inner.close();
          return { value: undefined, done: true } as IteratorResult<WatchBatch>;
        },
      }),
    };
  }
  breakLive(err: unknown): void {
    this.#live?.fail(err);
  }
}

describe('watchPrefix (the watched view)', () => {
  test(
    'a reset with the listing, then ordered events with no gaps; revision follows',
    { timeout: 30_000 },
    async () => {
      const store = new MemoryStore();
      await store.put('/p/a', '1');
      await store.put('/other', 'x');
      const view = watchPrefix(store, '/p/');
      const replica = new Replica();
      const consumed = (async () => {
        for await (const c of view) replica.apply(c);
      })();
      await view.ready();
      for (let i = 0; i < 50; i++) {
        await store.put(`/p/k${i % 7}`, String(i));
        if (i % 5 === 0) await store.delete(`/p/k${i % 3}`);
      }
      const head = await store.headRevision();
      await until('caught up', () => replica.revision >= head - 0 && view.revision >= head);
      assert.deepEqual(replica.map, await content(store, '/p/'));
      assert.equal(replica.resets, 1);
      assert.equal(view.state, 'watching');
      view.close();
      view.close();
      await consumed;
      assert.equal(view.state, 'closed');
      await store.close();
    },
  );

  test(
    'MUSTER_COMPACTED or a broken stream: back-off, re-list, and the replica is whole again',
    { timeout: 30_000 },
    async () => {
      const clock = new ManualClock();
      const store = new MemoryStore({ clock });
      const source = new FlakySource(store);
      const retries: { error: unknown; delay: number }[] = [];
      const replica = new Replica();
      const view = watchPrefix(source, '/p/', {
        clock,
        random: () => 0,
        onChange: (c) => replica.apply(c),
        onRetry: (error, delay) => retries.push({ error, delay }),
      });
      await view.ready();
      await store.put('/p/a', '1');
      await until('a seen', () => replica.map.has('/p/a'));
      source.breakLive(new MusterError('MUSTER_COMPACTED', 'compacted (test)'));
      await until('backing off', () => view.state === 'backing-off');
      // Changes while the view is not watching are covered by the next listing.
      await store.put('/p/b', '2');
      await store.delete('/p/a');
      await clock.tick(50);
      await until('re-listed', () => view.state === 'watching');
      assert.deepEqual(replica.map, await content(store, '/p/'));
      assert.equal(replica.resets, 2);
      assert.equal(view.relists, 1);
      assert.ok(isMusterError(retries[0]?.error, 'MUSTER_COMPACTED'));
      assert.equal(retries[0]?.delay, 50, 'the watch had delivered: back-off starts at its first delay');

      source.breakLive(new MusterError('MUSTER_UNAVAILABLE', 'connection reset (test)'));
      await until('backing off again', () => view.state === 'backing-off');
      await store.put('/p/c', '3');
      // The watch since the re-list delivered nothing and lived less than the cap: the back-off grows.
      assert.equal(retries[1]?.delay, 100);
      await clock.tick(100);
      await until('watching again', () => view.state === 'watching');
      await until('c seen', () => replica.map.has('/p/c'));
      assert.deepEqual(replica.map, await content(store, '/p/'));
      assert.throws(
        () => view[Symbol.asyncIterator](),
        (e) => isMusterError(e, 'MUSTER_INVALID_ARGUMENT'),
      );
      await view[Symbol.asyncDispose]();
      await store.close();
    },
  );

  test(
    'the back-off doubles to its cap, with jitter, on the injected clock',
    { timeout: 30_000 },
    async () => {
      const clock = new ManualClock();
      const store = new MemoryStore({ clock });
      const source = new FlakySource(store);
      source.failLists = 9;
      const delays: number[] = [];
      const randoms = [0, 0, 0, 0, 0, 0, 0, 0.5, 1];
      const view = watchPrefix(source, '/p/', {
        clock,
        backoff: { initial: 10, max: '200ms', jitter: 0.5 },
        random: () => randoms.shift() ?? 0,
        onRetry: (_, delay) => delays.push(delay),
      });
      let ready = false;
      void view.ready().then(() => (ready = true));
      for (let i = 0; i < 9; i++) {
        await until(`retry ${i + 1}`, () => delays.length === i + 1);
        assert.equal(ready, false);
        await clock.tick(delays[i]!);
      }
      await view.ready();
      assert.deepEqual(delays, [10, 20, 40, 80, 160, 200, 200, 150, 100]);
      assert.equal(source.listCalls, 10);
      view.close();
      await store.close();
    },
  );

  test(
    'a closed store ends the view with MUSTER_CLOSED; an aborted signal closes it',
    { timeout: 30_000 },
    async () => {
      const store = new MemoryStore();
      const view = watchPrefix(store, '/p/');
      await view.ready();
      const iterating = (async () => {
        for await (const c of view) void c;
      })();
      await store.close();
      await assert.rejects(iterating, (e) => isMusterError(e, 'MUSTER_CLOSED'));
      assert.equal(view.state, 'failed');

      const store2 = new MemoryStore();
      const controller = new AbortController();
      const view2 = watchPrefix(store2, '/p/', { signal: controller.signal });
      controller.abort();
      await assert.rejects(view2.ready(), (e) => isMusterError(e, 'MUSTER_CLOSED'));
      assert.equal(view2.state, 'closed');
      assert.throws(
        () => watchPrefix(store2, '/p/', { signal: controller.signal }),
        (e) => isMusterError(e, 'MUSTER_ABORTED'),
      );
      assert.throws(
        () => watchPrefix(store2, '/p/', { backoff: { initial: 100, max: 10 } }),
        (e) => isMusterError(e, 'MUSTER_INVALID_ARGUMENT'),
      );
      await flushMicrotasks();
      await store2.close();
    },
  );
});
