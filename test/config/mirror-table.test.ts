/**
 * The mirror's side of the shared table, with a scripted relay watch: content arriving from the table
 * (synchronously, through `poll`) and the same changes arriving later on the socket.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  cancelConfig,
  type ConfigSource,
  ConfigKeys,
  initConfig,
  openConfig,
  publishConfig,
  readConfig,
} from '../../src/config/index.js';
import type { MirrorBatch, MirrorWatch } from '../../src/config/mirror.js';
import { type KeyValue, MemoryStore, type RangeResult } from '../../src/store/index.js';

/** A relay-like source on a memory store: reads go to the store; batches and table content are scripted. */
function scripted(store: MemoryStore) {
  let feed: ((b: MirrorBatch) => Promise<void>) | undefined;
  let table: MirrorBatch[] = [];
  const source: ConfigSource = {
    relayed: true,
    range: (p, o) => store.range(p, o),
    headRevision: (o) => store.headRevision(o),
    watch(): MirrorWatch {
      const queue: { batch: MirrorBatch; taken: () => void }[] = [];
      let wake: (() => void) | undefined;
      let closed = false;
      feed = (batch) =>
        new Promise<void>((taken) => {
          queue.push({ batch, taken });
          wake?.();
        });
      return {
        requestProgress: () => undefined,
        close: () => {
          closed = true;
          wake?.();
        },
        poll: (applied) => {
          const out = table.filter((b) => b.revision > applied);
          table = [];
          return out;
        },
        async *[Symbol.asyncIterator]() {
          while (!closed) {
            for (let next = queue.shift(); next !== undefined; next = queue.shift()) {
              yield next.batch;
              next.taken(); // the consumer asks for more: it has applied the batch
            }
            await new Promise<void>((resolve) => (wake = resolve));
          }
        },
      };
    },
  };
  return {
    source,
    /**
     * Puts a batch on the "socket"; resolves once the mirror has applied it (its watch loop asked for
     * the next batch), so a test can assert what the batch did — or did not — change.
     */
    push: (b: MirrorBatch): Promise<void> => feed?.(b) ?? Promise.reject(new Error('no watch is open')),
    /** What the next poll of the "table" returns: the prefix's content as the store has it now. */
    tableNow: async (prefix: string) => {
      const r: RangeResult = await store.range(prefix);
      table = [{ type: 'state', revision: r.revision, kvs: r.kvs }];
    },
  };
}

const key = (kvs: readonly KeyValue[], k: string): KeyValue => kvs.find((kv) => kv.key === k) as KeyValue;

describe('mirror and shared table', () => {
  test('a listener that asks the handle while a socket batch is applied cannot interleave the table into it', async () => {
    const store = new MemoryStore();
    await initConfig(store, 't', { maxStaleness: '2s' });
    await publishConfig(store, 't', 'a', { in: '10s' });
    const s = scripted(store);
    const keys = new ConfigKeys('t');
    const h = openConfig(s.source, 't');
    try {
      await h.ready();
      const v2 = await publishConfig(store, 't', 'b', { in: '10s' });
      const v3 = await publishConfig(store, 't', 'c', { in: '11s' });
      const mid = await store.range(keys.prefix);
      await cancelConfig(store, 't', v3.version);
      await s.tableNow(keys.prefix); // the table already has v3 cancelled
      h.on('version', () => void h.timeline()); // re-enters the handle from inside the batch
      await s.push({
        type: 'events',
        revision: mid.revision,
        events: [
          { type: 'put', kv: key(mid.kvs, keys.version(v2.version)) },
          { type: 'put', kv: key(mid.kvs, keys.version(v3.version)) },
        ],
      });
      h.timeline(); // the table's turn
      const held = h
        .timeline()
        .versions.map((v) => v.version)
        .sort();
      const live = (await readConfig(store, 't')).versions
        .filter((v) => v.cancelledAt === undefined)
        .map((v) => v.version)
        .sort();
      assert.deepEqual(held, live);
    } finally {
      await h.close();
      await store.close();
    }
  });

  test('table content applies puts and deletes; socket batches it already covered change nothing', async () => {
    const store = new MemoryStore();
    await initConfig(store, 'd', { maxStaleness: '2s' });
    await publishConfig(store, 'd', 'a', { in: '10s' });
    const s = scripted(store);
    const keys = new ConfigKeys('d');
    const h = openConfig(s.source, 'd');
    const seen: string[] = [];
    h.on('version', ({ version, cancelled }) => seen.push(`${version.version}${cancelled ? 'x' : ''}`));
    try {
      await h.ready();
      const before = await store.range(keys.prefix);
      const v2 = await publishConfig(store, 'd', 'b', { in: '10s' });
      await store.delete(keys.version(1)); // e.g. pruned: the table shows it gone
      const after = await store.range(keys.prefix);
      await s.tableNow(keys.prefix);
      h.timeline(); // takes the table
      // Events raised while polling are delivered in microtasks queued during that call; a microtask
      // queued now runs after all of them.
      await new Promise<void>((resolve) => queueMicrotask(resolve));
      assert.deepEqual(
        h.timeline().versions.map((v) => v.version),
        [v2.version],
      );
      assert.deepEqual(seen.sort(), ['1x', `${v2.version}`].sort());
      // The socket now delivers the same two changes, in one batch spanning both revisions.
      await s.push({
        type: 'events',
        revision: after.revision,
        events: [
          { type: 'put', kv: key(after.kvs, keys.version(v2.version)) },
          {
            type: 'delete',
            kv: { ...key(before.kvs, keys.version(1)), modRevision: after.revision, version: 0 },
          },
        ],
      });
      assert.deepEqual(
        h.timeline().versions.map((v) => v.version),
        [v2.version],
      );
      assert.equal(seen.length, 2, `events reported twice: ${seen.join(', ')}`);
    } finally {
      await h.close();
      await store.close();
    }
  });
});
