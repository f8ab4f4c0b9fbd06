import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ManualClock } from '../../src/clock.js';
import { isMusterError } from '../../src/errors.js';
import { type Journal, type JournalEntry, MemoryStore, textOf } from '../../src/store/index.js';
import { collectUntil } from '../../src/testing/index.js';

/** A journal whose flushes the test releases by hand. */
class HeldJournal implements Journal {
  entries: JournalEntry[] = [];
  durable = 0;
  #waiting: (() => void)[] = [];
  fail: Error | undefined;
  append(entry: JournalEntry): void {
    this.entries.push(entry);
  }
  flush(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#waiting.push(() => (this.fail ? reject(this.fail) : resolve()));
    });
  }
  release(): void {
    this.durable = this.entries.length;
    const w = this.#waiting;
    this.#waiting = [];
    for (const f of w) f();
  }
  get pendingFlushes(): number {
    return this.#waiting.length;
  }
}

const settle = () => new Promise((r) => setImmediate(r));

describe('memory engine with a journal', () => {
  test('a write is acknowledged and shown to watchers only after its flush; one flush covers many', async () => {
    const journal = new HeldJournal();
    const store = new MemoryStore({ journal });
    const w = store.watch('/j/');
    let acked = 0;
    const writes = [store.put('/j/a', '1'), store.put('/j/b', '2'), store.put('/j/c', '3')].map((p) =>
      p.then((r) => {
        acked++;
        return r;
      }),
    );
    await settle();
    assert.equal(acked, 0, 'nothing is acknowledged before the flush');
    assert.equal(journal.pendingFlushes, 1, 'one flush at a time');
    const read = store.get('/j/a');
    journal.release();
    await settle();
    assert.equal(acked, 1, 'the first flush covered the first write');
    assert.equal(
      journal.pendingFlushes,
      1,
      'group commit: one more flush covers the two writes that queued meanwhile',
    );
    journal.release();
    const results = await Promise.all(writes);
    assert.deepEqual(
      results.map((r) => r.revision),
      [2, 3, 4],
    );
    assert.equal(textOf((await read)?.value ?? new Uint8Array()), '1', 'a read waits for durability');
    const { events } = await collectUntil(w, (evs) => evs.length === 3);
    assert.deepEqual(
      events.map((e) => e.kv.key),
      ['/j/a', '/j/b', '/j/c'],
    );
    w.close();
    await store.close();
  });

  test('replaying the journal, or restoring a snapshot, rebuilds the same state', async () => {
    const entries: JournalEntry[] = [];
    const journal: Journal = { append: (e) => entries.push(e), flush: async () => {} };
    const clock = new ManualClock();
    const a = new MemoryStore({ journal, clock });
    const lease = await a.grantLease(10);
    await a.put('/r/leased', 'x', { lease: lease.id });
    await a.put('/r/k', '1');
    await a.put('/r/k', '2');
    await a.txn(
      [],
      [
        { type: 'put', key: '/r/t', value: 't' },
        { type: 'delete', selector: { key: '/r/k' } },
      ],
    );
    await a.compact(3);
    const b = new MemoryStore({ clock });
    for (const e of entries) b.replay(e);
    const c = new MemoryStore({ clock });
    c.restore(a.snapshot());
    for (const s of [b, c]) {
      assert.equal(await s.headRevision(), await a.headRevision());
      assert.deepEqual(await s.range('/r/'), await a.range('/r/'));
      assert.equal((await s.leaseTimeToLive(lease.id))?.grantedTtlSeconds, 10);
      const next = await s.grantLease(5);
      assert.notEqual(next.id, lease.id, 'lease ids are not reused after a restart');
    }
    assert.equal(
      textOf((await b.get('/r/k', { revision: 4 }))?.value ?? new Uint8Array()),
      '2',
      'history replays too',
    );
    await Promise.all([a.close(), b.close(), c.close()]);
  });

  test('a failed flush stops the store with MUSTER_INTERNAL; watchers end with the error', async () => {
    const journal = new HeldJournal();
    const store = new MemoryStore({ journal });
    const w = store.watch('/f/');
    const p = store.put('/f/a', '1');
    await settle();
    journal.fail = new Error('EIO: disk on fire');
    journal.release();
    await assert.rejects(p, (err) => isMusterError(err, 'MUSTER_INTERNAL'));
    await assert.rejects(store.get('/f/a'), (err) => isMusterError(err, 'MUSTER_INTERNAL'));
    await assert.rejects(w[Symbol.asyncIterator]().next(), (err) => isMusterError(err, 'MUSTER_INTERNAL'));
  });

  test('a gap in the journal is reported as corrupt data', () => {
    const store = new MemoryStore();
    assert.throws(
      () => store.replay({ type: 'write', revision: 5, changes: [] }),
      (err) => isMusterError(err, 'MUSTER_CORRUPT_DATA'),
    );
  });
});

describe('memory engine details', () => {
  test('lease expiry follows the injected clock exactly', async () => {
    const clock = new ManualClock();
    const store = new MemoryStore({ clock });
    const lease = await store.grantLease(3);
    await store.put('/e/k', 'v', { lease: lease.id });
    await clock.tick(2999);
    assert.ok(await store.get('/e/k'), 'alive just before the TTL');
    await clock.tick(1);
    assert.equal(await store.get('/e/k'), undefined, 'gone at the TTL');
    await store.close();
  });

  test('closed watchers leave the index; closing the store ends live watches with MUSTER_CLOSED', async () => {
    const store = new MemoryStore();
    const watches = Array.from({ length: 50 }, (_, i) => store.watch(`/w/${i}/`));
    assert.equal(store.watcherCount, 50);
    for (const w of watches.slice(0, 40)) w.close();
    assert.equal(store.watcherCount, 10);
    const live = watches[45]!;
    const next = live[Symbol.asyncIterator]().next();
    await store.close();
    await assert.rejects(next, (err) => isMusterError(err, 'MUSTER_CLOSED'));
  });

  test('keys order by UTF-8 bytes, as etcd orders them', async () => {
    const store = new MemoryStore();
    const keys = ['/u/a', '/u/\uffff', '/u/😀', '/u/é', '/u/Z'];
    for (const k of keys) await store.put(k, k);
    const listed = (await store.range('/u/')).kvs.map((kv) => kv.key);
    const byBytes = [...keys].sort((x, y) => Buffer.compare(Buffer.from(x), Buffer.from(y)));
    assert.deepEqual(listed, byBytes);
    await store.close();
  });
});
