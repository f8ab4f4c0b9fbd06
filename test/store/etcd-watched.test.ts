import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { isMusterError } from '../../src/errors.js';
import { type EtcdStore, openEtcdStore } from '../../src/store/etcd/index.js';
import {
  type KeyValue,
  type SourceWatch,
  type WatchBatch,
  type WatchOptions,
  type WatchSource,
  textOf,
  watchPrefix,
} from '../../src/store/index.js';
import { ETCD_INSTALL_HINT, type EtcdCluster, needBinary, startEtcd } from '../../src/testing/index.js';
import { uniquePrefix } from './etcd-helpers.js';

/** A source whose first watch starts only when `open()` is called: history can be compacted meanwhile. */
function gatedSource(store: EtcdStore): WatchSource & { open(): void; watches: number } {
  let open!: () => void;
  const gate = new Promise<void>((resolve) => (open = resolve));
  const source = {
    watches: 0,
    open,
    range: (prefix: string, options: { signal?: AbortSignal }) => store.range(prefix, options),
    watch(prefix: string, options: WatchOptions): SourceWatch {
      source.watches++;
      if (source.watches > 1) return store.watch(prefix, options);
      let inner: ReturnType<EtcdStore['watch']> | undefined;
      let closed = false;
      return {
        requestProgress: () => inner?.requestProgress(),
        close: () => {
          closed = true;
          inner?.close();
        },
        async *[Symbol.asyncIterator](): AsyncGenerator<WatchBatch> {
          await gate;
          if (closed) return;
          inner = store.watch(prefix, options);
          yield* inner;
        },
      };
    },
  };
  return source;
}

describe('the watched view on etcd', { skip: needBinary('etcd', ETCD_INSTALL_HINT) }, () => {
  let cluster: EtcdCluster;
  let store: EtcdStore;
  before(async () => {
    cluster = await startEtcd();
    store = openEtcdStore(cluster.url);
  });
  after(async () => {
    await store?.close();
    await cluster?.close();
  });

  test(
    'a watch whose start revision was compacted re-lists and the replica is whole',
    { timeout: 60_000 },
    async () => {
      const prefix = uniquePrefix('watched');
      await store.put(`${prefix}a`, '1');
      const source = gatedSource(store);
      const replica = new Map<string, string>();
      const errors: unknown[] = [];
      let resets = 0;
      let resolveWhole!: () => void;
      const whole = new Promise<void>((resolve) => (resolveWhole = resolve));
      const view = watchPrefix(source, prefix, {
        backoff: { initial: 10, max: 50 },
        onRetry: (err) => errors.push(err),
        onChange: (c) => {
          if (c.type === 'reset') {
            resets++;
            replica.clear();
            for (const kv of c.kvs as KeyValue[]) replica.set(kv.key, textOf(kv.value));
          } else if (c.type === 'events') {
            for (const e of c.events) {
              if (e.type === 'put') replica.set(e.kv.key, textOf(e.kv.value));
              else replica.delete(e.kv.key);
            }
          }
          if (replica.get(`${prefix}c`) === '3' && !replica.has(`${prefix}a`)) resolveWhole();
        },
      });
      try {
        await view.ready();
        // While the first watch has not started: changes, then a compaction past its start revision.
        await store.put(`${prefix}b`, '2');
        await store.delete(`${prefix}a`);
        const { revision } = await store.put(`${prefix}c`, '3');
        await store.compact(revision);
        source.open();
        await whole;
        assert.ok(isMusterError(errors[0], 'MUSTER_COMPACTED'), `first retry after ${String(errors[0])}`);
        assert.equal(resets, 2);
        assert.equal(view.relists, 1);
        assert.deepEqual([...replica.keys()].sort(), [`${prefix}b`, `${prefix}c`]);
        // And it keeps watching after the re-list.
        const later = await store.put(`${prefix}d`, '4');
        const deadline = Date.now() + 10_000;
        while (view.revision < later.revision) {
          assert.ok(Date.now() < deadline, 'the re-listed view did not catch up');
          await new Promise((r) => setTimeout(r, 10));
        }
        assert.equal(replica.get(`${prefix}d`), '4');
      } finally {
        await view[Symbol.asyncDispose]();
      }
    },
  );
});
