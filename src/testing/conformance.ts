/**
 * The Store contract as tests. Every engine — memory, etcd, the embedded server, later PostgreSQL —
 * must pass `storeConformance` unchanged. Each test works under its own random key prefix, so one
 * store (one etcd cluster) can serve the whole suite; the compaction tests run last.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { isMusterError, type ErrorCode } from '../errors.js';
import { bytesOf, textOf } from '../store/index.js';
import type { KeyValue, Store, WatchEvent } from '../store/index.js';
import { collectUntil } from './watch-helpers.js';

/** What the suite needs from an engine under test. */
export interface ConformanceTarget {
  store: Store;
  /**
   * Moves the engine's clock forward (memory engine with a ManualClock). Without it, lease-expiry
   * tests wait in real time for the server to expire a short lease.
   */
  advance?: (ms: number) => Promise<void>;
  /** Called once after the suite. */
  cleanup?: () => Promise<void>;
}

export interface ConformanceOptions {
  /** Extra time allowed for a lease to be expired by the server (etcd checks about every 500 ms). */
  leaseSlackMs?: number;
  /** Shorter randomized history for slow targets. Default 300 operations. */
  randomOps?: number;
}

const text = (kv: KeyValue | undefined): string | undefined =>
  kv === undefined ? undefined : textOf(kv.value);

async function rejectsWith(p: Promise<unknown> | (() => unknown), code: ErrorCode): Promise<void> {
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (err) {
    assert.ok(
      isMusterError(err, code),
      `expected ${code}, got ${String((err as { code?: string })?.code)}: ${String(err)}`,
    );
    return;
  }
  assert.fail(`expected ${code}, but the call succeeded`);
}

/**
 * Registers the conformance suite under `describe(name)`. `makeTarget` runs once, before the tests.
 */
export function storeConformance(
  name: string,
  makeTarget: () => Promise<ConformanceTarget>,
  options: ConformanceOptions = {},
): void {
  const slack = options.leaseSlackMs ?? 3000;
  const randomOps = options.randomOps ?? 300;
  describe(`store conformance: ${name}`, () => {
    let target: ConformanceTarget;
    let store: Store;
    let p: string; // this test's key prefix
    before(async () => {
      target = await makeTarget();
      store = target.store;
    });
    after(async () => {
      await store?.close();
      await target?.cleanup?.();
    });
    const fresh = (): string => (p = `/conformance/${randomBytes(4).toString('hex')}/`);
    test('put and get: revisions, versions, createRevision and lease', async () => {
      fresh();
      const r1 = await store.put(`${p}a`, 'one');
      const kv1 = await store.get(`${p}a`);
      assert.equal(text(kv1), 'one');
      assert.equal(kv1?.createRevision, r1.revision);
      assert.equal(kv1?.modRevision, r1.revision);
      assert.equal(kv1?.version, 1);
      assert.equal(kv1?.lease, '0');
      const r2 = await store.put(`${p}a`, bytesOf('two'), { prevKv: true });
      assert.equal(r2.revision, r1.revision + 1, 'each write transaction adds exactly one revision');
      assert.equal(text(r2.prev), 'one');
      const kv2 = await store.get(`${p}a`);
      assert.equal(kv2?.version, 2);
      assert.equal(kv2?.createRevision, r1.revision);
      assert.equal(kv2?.modRevision, r2.revision);
      const d = await store.delete(`${p}a`, { prevKv: true });
      assert.equal(d.deleted, 1);
      assert.equal(d.revision, r2.revision + 1);
      assert.equal(text(d.prev[0]), 'two');
      assert.equal(await store.get(`${p}a`), undefined);
      const r3 = await store.put(`${p}a`, 'three');
      const kv3 = await store.get(`${p}a`);
      assert.equal(kv3?.version, 1, 'version restarts after a delete');
      assert.equal(kv3?.createRevision, r3.revision);
    });

    test('revisions increase by one per write and never go back', async () => {
      fresh();
      let last = await store.headRevision();
      for (let i = 0; i < 20; i++) {
        const r = await store.put(`${p}k${i % 3}`, String(i));
        assert.equal(r.revision, last + 1);
        last = r.revision;
        assert.ok((await store.headRevision()) >= last);
      }
    });

    test('deleting nothing creates no revision', async () => {
      fresh();
      const { revision } = await store.put(`${p}x`, 'x');
      const d = await store.delete(`${p}missing`);
      assert.equal(d.deleted, 0);
      assert.equal(d.revision, revision);
      const d2 = await store.delete({ prefix: `${p}nothing/` });
      assert.equal(d2.deleted, 0);
      assert.equal(await store.headRevision(), revision);
    });

    test('range: prefix boundaries, order, limit, keysOnly, countOnly, [start, end)', async () => {
      fresh();
      for (const k of ['a/1', 'a/10', 'a/10/x', 'a/10/y', 'a/2', 'ab', 'a']) await store.put(`${p}${k}`, k);
      const keys = async (sel: Parameters<Store['range']>[0]): Promise<string[]> =>
        (await store.range(sel)).kvs.map((kv) => kv.key.slice(p.length));
      assert.deepEqual(await keys(`${p}a/10/`), ['a/10/x', 'a/10/y'], 'a/1 and a/10 are not under a/10/');
      assert.deepEqual(await keys(`${p}a/`), ['a/1', 'a/10', 'a/10/x', 'a/10/y', 'a/2']);
      assert.deepEqual(await keys(`${p}a/1`), ['a/1', 'a/10', 'a/10/x', 'a/10/y']);
      assert.deepEqual(await keys({ start: `${p}a/10`, end: `${p}a/2` }), ['a/10', 'a/10/x', 'a/10/y']);
      assert.deepEqual(await keys({ key: `${p}a/10` }), ['a/10']);
      const limited = await store.range(`${p}a/`, { limit: 2 });
      assert.equal(limited.kvs.length, 2);
      assert.equal(limited.count, 5);
      assert.equal(limited.more, true);
      const ko = await store.range(`${p}a/`, { keysOnly: true });
      assert.equal(ko.kvs.length, 5);
      assert.ok(ko.kvs.every((kv) => kv.value.length === 0));
      const co = await store.range(`${p}`, { countOnly: true });
      assert.equal(co.count, 7);
      assert.equal(co.kvs.length, 0);
      assert.equal(co.revision, await store.headRevision());
    });

    test('reads at a past revision see the past', async () => {
      fresh();
      const r1 = await store.put(`${p}k`, 'v1');
      await store.put(`${p}other`, 'o');
      const r2 = await store.put(`${p}k`, 'v2');
      await store.delete(`${p}k`);
      assert.equal(text(await store.get(`${p}k`, { revision: r1.revision })), 'v1');
      assert.equal(text(await store.get(`${p}k`, { revision: r2.revision })), 'v2');
      assert.equal(await store.get(`${p}k`), undefined);
      const past = await store.range(p, { revision: r1.revision });
      assert.deepEqual(
        past.kvs.map((kv) => text(kv)),
        ['v1'],
      );
      assert.equal(past.revision, r1.revision);
      const head = await store.headRevision();
      await rejectsWith(store.get(`${p}k`, { revision: head + 1000 }), 'MUSTER_FUTURE_REVISION');
    });

    test('txn: every compare target and operator', async () => {
      fresh();
      const r = await store.put(`${p}c`, 'm');
      await store.put(`${p}c`, 'm2'); // version 2
      const lease = await store.grantLease(60);
      await store.put(`${p}l`, 'leased', { lease: lease.id });
      const kv = (await store.get(`${p}c`)) as KeyValue;
      const cases: [Parameters<Store['txn']>[0][number], boolean][] = [
        [{ key: `${p}c`, target: 'value', op: '=', value: 'm2' }, true],
        [{ key: `${p}c`, target: 'value', op: '!=', value: 'm2' }, false],
        [{ key: `${p}c`, target: 'value', op: '<', value: 'n' }, true],
        [{ key: `${p}c`, target: 'value', op: '>', value: 'm' }, true],
        [{ key: `${p}missing`, target: 'value', op: '!=', value: 'x' }, false],
        [{ key: `${p}c`, target: 'version', op: '=', value: 2 }, true],
        [{ key: `${p}c`, target: 'version', op: '>', value: 2 }, false],
        [{ key: `${p}missing`, target: 'version', op: '=', value: 0 }, true],
        [{ key: `${p}c`, target: 'createRevision', op: '=', value: r.revision }, true],
        [{ key: `${p}c`, target: 'createRevision', op: '<', value: r.revision }, false],
        [{ key: `${p}missing`, target: 'createRevision', op: '=', value: 0 }, true],
        [{ key: `${p}c`, target: 'modRevision', op: '=', value: kv.modRevision }, true],
        [{ key: `${p}c`, target: 'modRevision', op: '<', value: kv.modRevision + 1 }, true],
        [{ key: `${p}c`, target: 'modRevision', op: '!=', value: kv.modRevision }, false],
        [{ key: `${p}l`, target: 'lease', op: '=', value: lease.id }, true],
        [{ key: `${p}c`, target: 'lease', op: '=', value: '0' }, true],
        [{ key: `${p}l`, target: 'lease', op: '!=', value: lease.id }, false],
      ];
      for (const [compare, expected] of cases) {
        const res = await store.txn([compare], [], []);
        assert.equal(res.succeeded, expected, `compare ${JSON.stringify(compare)}`);
      }
      await store.revokeLease(lease.id);
    });

    test('txn: atomic, one revision, with reads and the failure branch', async () => {
      fresh();
      const base = (await store.put(`${p}a`, '1')).revision;
      const ok = await store.txn(
        [{ key: `${p}a`, target: 'value', op: '=', value: '1' }],
        [
          { type: 'put', key: `${p}a`, value: '2' },
          { type: 'put', key: `${p}b`, value: 'new' },
          { type: 'range', selector: { prefix: p } },
        ],
        [{ type: 'put', key: `${p}failed`, value: 'x' }],
      );
      assert.equal(ok.succeeded, true);
      assert.equal(ok.revision, base + 1, 'a transaction is one revision');
      assert.equal((await store.get(`${p}a`))?.modRevision, base + 1);
      assert.equal((await store.get(`${p}b`))?.modRevision, base + 1);
      const rangeResult = ok.results[2];
      assert.equal(rangeResult?.type, 'range');
      const no = await store.txn(
        [{ key: `${p}a`, target: 'value', op: '=', value: '1' }],
        [{ type: 'delete', selector: { prefix: p } }],
        [
          { type: 'put', key: `${p}failed`, value: 'x' },
          { type: 'range', selector: { key: `${p}a` } },
        ],
      );
      assert.equal(no.succeeded, false);
      assert.equal(text(await store.get(`${p}failed`)), 'x');
      assert.equal(text(await store.get(`${p}a`)), '2', 'the success branch did not run');
      const got = no.results[1];
      assert.ok(got?.type === 'range' && text(got.kvs[0]) === '2');
      const empty = await store.txn([{ key: `${p}a`, target: 'value', op: '=', value: 'nope' }], [], []);
      assert.equal(empty.succeeded, false);
      assert.equal(empty.revision, await store.headRevision(), 'a txn that writes nothing adds no revision');
      assert.equal(empty.revision, no.revision);
      const del = await store.txn([], [{ type: 'delete', selector: { prefix: p } }]);
      const delResult = del.results[0];
      assert.ok(delResult?.type === 'delete' && delResult.deleted === 3);
      assert.equal((await store.range(p)).count, 0);
    });

    test('bad input gets coded errors and leaves state unchanged', async () => {
      fresh();
      await store.put(`${p}k`, 'v');
      const head = await store.headRevision();
      const s = store as unknown as Record<string, (...args: unknown[]) => Promise<unknown>>;
      const call =
        (fn: string, ...args: unknown[]) =>
        () =>
          (s[fn] as (...a: unknown[]) => Promise<unknown>).apply(store, args);
      await rejectsWith(call('put', '', 'v'), 'MUSTER_INVALID_ARGUMENT');
      await rejectsWith(call('put', 42, 'v'), 'MUSTER_INVALID_ARGUMENT');
      await rejectsWith(call('put', `${p}k`, { not: 'bytes' }), 'MUSTER_INVALID_ARGUMENT');
      await rejectsWith(call('put', `${p}k`, 12), 'MUSTER_INVALID_ARGUMENT');
      await rejectsWith(call('get', ''), 'MUSTER_INVALID_ARGUMENT');
      await rejectsWith(call('delete', ''), 'MUSTER_INVALID_ARGUMENT');
      await rejectsWith(call('range', { start: `${p}z`, end: `${p}a` }), 'MUSTER_INVALID_ARGUMENT');
      await rejectsWith(call('range', p, { limit: -1 }), 'MUSTER_INVALID_ARGUMENT');
      await rejectsWith(call('get', `${p}k`, { revision: 0 }), 'MUSTER_INVALID_ARGUMENT');
      await rejectsWith(call('grantLease', 0), 'MUSTER_INVALID_ARGUMENT');
      await rejectsWith(call('grantLease', -5), 'MUSTER_INVALID_ARGUMENT');
      await rejectsWith(call('grantLease', 1e12), 'MUSTER_INVALID_ARGUMENT');
      await rejectsWith(call('grantLease', Number.NaN), 'MUSTER_INVALID_ARGUMENT');
      await rejectsWith(call('keepAlive', 'not-a-lease'), 'MUSTER_INVALID_ARGUMENT');
      await rejectsWith(call('put', `${p}k2`, 'v', { lease: '123456789' }), 'MUSTER_LEASE_NOT_FOUND');
      await rejectsWith(call('keepAlive', '123456789'), 'MUSTER_LEASE_NOT_FOUND');
      await rejectsWith(call('revokeLease', '123456789'), 'MUSTER_LEASE_NOT_FOUND');
      await rejectsWith(
        call(
          'txn',
          [{ key: `${p}k`, target: 'colour', op: '=', value: 1 }],
          [{ type: 'put', key: `${p}k`, value: 'x' }],
        ),
        'MUSTER_INVALID_ARGUMENT',
      );
      await rejectsWith(
        call(
          'txn',
          [{ key: `${p}k`, target: 'version', op: '~', value: 1 }],
          [{ type: 'put', key: `${p}k`, value: 'x' }],
        ),
        'MUSTER_INVALID_ARGUMENT',
      );
      await rejectsWith(
        call(
          'txn',
          [],
          [
            { type: 'put', key: `${p}k`, value: 'x' },
            { type: 'put', key: `${p}k`, value: 'y' },
          ],
        ),
        'MUSTER_INVALID_ARGUMENT',
      );
      await rejectsWith(
        call('txn', [], [{ type: 'put', key: `${p}k3`, value: 'x', lease: '987654321' }]),
        'MUSTER_LEASE_NOT_FOUND',
      );
      await rejectsWith(call('txn', [], [{ type: 'explode', key: `${p}k` }]), 'MUSTER_INVALID_ARGUMENT');
      assert.equal(await store.headRevision(), head, 'no bad call changed the store');
      assert.equal(text(await store.get(`${p}k`)), 'v');
      assert.equal((await store.range(p)).count, 1);
    });

    test('watch: events in order, prefix boundaries, prevKv, one batch per transaction', async () => {
      fresh();
      const w = store.watch(`${p}a/1/`, { prevKv: true });
      const start = await store.headRevision();
      await store.put(`${p}a/1`, 'not under a/1/');
      await store.put(`${p}a/10/x`, 'not under a/1/ either');
      await store.put(`${p}a/1/x`, 'one');
      await store.put(`${p}a/1/x`, 'two');
      await store.txn(
        [],
        [
          { type: 'put', key: `${p}a/1/y`, value: 'y' },
          { type: 'delete', selector: { key: `${p}a/1/x` } },
        ],
      );
      const { events, batches } = await collectUntil(w, (evs) => evs.length >= 4);
      w.close();
      assert.deepEqual(
        events.map((e) => [e.type, e.kv.key.slice(p.length), text(e.kv)]),
        [
          ['put', 'a/1/x', 'one'],
          ['put', 'a/1/x', 'two'],
          ['put', 'a/1/y', 'y'],
          ['delete', 'a/1/x', ''],
        ],
      );
      assert.equal(events[0]?.kv.modRevision, start + 3);
      assert.equal(text(events[1]?.prev), 'one');
      assert.equal(text(events[3]?.prev), 'two');
      const txnBatch = batches.find((b) => b.type === 'events' && b.events.some((e) => e.type === 'delete'));
      assert.ok(
        txnBatch && txnBatch.type === 'events' && txnBatch.events.length === 2,
        'a txn arrives as one batch',
      );
      assert.equal(txnBatch.revision, start + 5);
    });

    test('watch: resume from a past revision replays exactly the history', async () => {
      fresh();
      const first = (await store.put(`${p}k`, '0')).revision;
      for (let i = 1; i < 10; i++) await store.put(`${p}k`, String(i));
      const w = store.watch(p, { fromRevision: first + 5 });
      const { events } = await collectUntil(w, (evs) => evs.length >= 5);
      w.close();
      assert.deepEqual(
        events.map((e) => text(e.kv)),
        ['5', '6', '7', '8', '9'],
      );
      assert.deepEqual(
        events.map((e) => e.kv.modRevision),
        [first + 5, first + 6, first + 7, first + 8, first + 9],
      );
    });

    test('watch: progress notifications cover the head', async () => {
      fresh();
      const w = store.watch(`${p}quiet/`);
      const { revision } = await store.put(`${p}elsewhere`, 'x');
      // ask until a progress batch covers our write (some engines answer only once the watch is synced)
      const timer = setInterval(() => w.requestProgress(), 100);
      w.requestProgress();
      try {
        const { batches } = await collectUntil(w, (_e, b) => b.type === 'progress' && b.revision >= revision);
        assert.ok(batches.every((b) => b.type === 'progress'));
      } finally {
        clearInterval(timer);
        w.close();
      }
    });

    test('watch: an aborted signal ends iteration without error', async () => {
      fresh();
      const ac = new AbortController();
      const w = store.watch(p, { signal: ac.signal });
      const seen: WatchEvent[] = [];
      const consumer = (async () => {
        for await (const b of w) if (b.type === 'events') seen.push(...b.events);
      })();
      await store.put(`${p}a`, '1');
      const deadline = Date.now() + 5000;
      while (seen.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
      ac.abort();
      await consumer;
      assert.equal(seen.length, 1);
    });

    test('watch: no gaps or duplicates under concurrent writers (randomized, checked against a model)', async () => {
      fresh();
      const from = (await store.headRevision()) + 1;
      const w = store.watch(p, { prevKv: false });
      const keys = Array.from({ length: 12 }, (_, i) => `${p}k${i}`);
      const acked: { revision: number; op: string }[] = [];
      const rnd = (n: number): number => Math.floor(Math.random() * n);
      const writer = async (ops: number): Promise<void> => {
        for (let i = 0; i < ops; i++) {
          const key = keys[rnd(keys.length)] as string;
          const choice = rnd(10);
          if (choice < 6)
            acked.push({ revision: (await store.put(key, `${i}-${rnd(1000)}`)).revision, op: 'put' });
          else if (choice < 8) {
            const d = await store.delete(key);
            if (d.deleted > 0) acked.push({ revision: d.revision, op: 'delete' });
          } else {
            const other = keys[rnd(keys.length)] as string;
            const t = await store.txn(
              [{ key, target: 'version', op: '>', value: 0 }],
              other === key
                ? [{ type: 'delete', selector: { key } }]
                : [
                    { type: 'put', key: other, value: `t${i}` },
                    { type: 'delete', selector: { key } },
                  ],
              [{ type: 'put', key, value: `f${i}` }],
            );
            acked.push({ revision: t.revision, op: 'txn' });
          }
        }
      };
      const writers = 4;
      await Promise.all(Array.from({ length: writers }, () => writer(Math.ceil(randomOps / writers))));
      const finalRange = await store.range(p);
      const head = finalRange.revision;
      const { events, batches } = await collectUntil(
        w,
        (_e, b) => b.type === 'events' && b.revision >= head,
        20000,
      );
      w.close();
      // 1. batches in strictly increasing revision order, events within a batch ascending
      let lastRev = from - 1;
      for (const b of batches) {
        if (b.type !== 'events') continue;
        const revs = b.events.map((e) => e.kv.modRevision);
        assert.ok(
          revs[0] !== undefined && revs[0] > lastRev,
          `batch at ${revs[0]} after ${lastRev}: a duplicate or reorder`,
        );
        assert.ok(revs.every((r, i) => i === 0 || r >= (revs[i - 1] as number)));
        lastRev = revs[revs.length - 1] as number;
      }
      // 2. no gaps: every acknowledged write revision appears in the watch
      const seen = new Set(events.map((e) => e.kv.modRevision));
      const writes = new Set(acked.map((a) => a.revision).filter((r) => r >= from));
      for (const r of writes) {
        const expected = acked.find((a) => a.revision === r);
        if (expected?.op === 'txn') continue; // a txn may have been a no-op delete
        assert.ok(seen.has(r), `write at revision ${r} never reached the watcher (a gap)`);
      }
      // 3. replaying the events reproduces the final state (the model)
      const model = new Map<string, string>();
      for (const e of events) {
        if (e.type === 'put') model.set(e.kv.key, text(e.kv) as string);
        else model.delete(e.kv.key);
      }
      const actual = new Map(finalRange.kvs.map((kv) => [kv.key, text(kv) as string]));
      assert.deepEqual([...model.entries()].sort(), [...actual.entries()].sort());
    });

    test('leases: keys attached, revoke deletes them at one revision, watchers see it', async () => {
      fresh();
      const lease = await store.grantLease(30);
      assert.ok(lease.ttlSeconds >= 30);
      await store.put(`${p}a`, 'a', { lease: lease.id });
      await store.put(`${p}b`, 'b', { lease: lease.id });
      await store.put(`${p}keep`, 'c');
      assert.equal((await store.get(`${p}a`))?.lease, lease.id);
      const info = await store.leaseTimeToLive(lease.id);
      assert.ok(
        info !== undefined && info.grantedTtlSeconds >= 30 && info.ttlSeconds <= info.grantedTtlSeconds,
      );
      assert.deepEqual([...(info?.keys ?? [])].sort(), [`${p}a`, `${p}b`]);
      const w = store.watch(p);
      await store.revokeLease(lease.id);
      const { events } = await collectUntil(w, (evs) => evs.length >= 2);
      w.close();
      assert.deepEqual(events.map((e) => `${e.type} ${e.kv.key.slice(p.length)}`).sort(), [
        'delete a',
        'delete b',
      ]);
      assert.equal(events[0]?.kv.modRevision, events[1]?.kv.modRevision, 'one revision for all of a lease');
      assert.equal((await store.range(p)).count, 1);
      assert.equal(await store.leaseTimeToLive(lease.id), undefined);
      await rejectsWith(store.keepAlive(lease.id), 'MUSTER_LEASE_NOT_FOUND');
    });

    test('leases: expiry deletes the keys, keep-alive extends', async () => {
      fresh();
      const short = await store.grantLease(1);
      const kept = await store.grantLease(1);
      const ttlMs = Math.max(short.ttlSeconds, kept.ttlSeconds) * 1000;
      await store.put(`${p}short`, 's', { lease: short.id });
      await store.put(`${p}kept`, 'k', { lease: kept.id });
      const w = store.watch(p);
      let keeping = true;
      const keeper = (async () => {
        while (keeping) {
          assert.ok((await store.keepAlive(kept.id)) >= 1);
          if (target.advance === undefined) await new Promise((r) => setTimeout(r, 300));
          else return;
        }
      })();
      if (target.advance !== undefined) {
        await keeper;
        const done = collectUntil(w, (evs) => evs.length >= 1);
        await target.advance(ttlMs / 2);
        await store.keepAlive(kept.id);
        await target.advance(ttlMs / 2 + 1);
        const { events } = await done;
        assert.deepEqual(
          events.map((e) => `${e.type} ${e.kv.key.slice(p.length)}`),
          ['delete short'],
        );
      } else {
        const { events } = await collectUntil(w, (evs) => evs.length >= 1, ttlMs + slack);
        assert.deepEqual(
          events.map((e) => `${e.type} ${e.kv.key.slice(p.length)}`),
          ['delete short'],
        );
        keeping = false;
        await keeper;
      }
      w.close();
      assert.equal(await store.get(`${p}short`), undefined);
      assert.equal(text(await store.get(`${p}kept`)), 'k', 'the kept-alive lease still holds its key');
      await rejectsWith(store.keepAlive(short.id), 'MUSTER_LEASE_NOT_FOUND');
      await store.revokeLease(kept.id);
    });

    test('compaction: reads and watches before it fail with MUSTER_COMPACTED; the caller can re-list', async () => {
      fresh();
      const old = (await store.put(`${p}k`, 'old')).revision;
      await store.put(`${p}k`, 'mid');
      const latest = (await store.put(`${p}k`, 'new')).revision;
      await store.compact(latest);
      await rejectsWith(store.get(`${p}k`, { revision: old }), 'MUSTER_COMPACTED');
      assert.equal(text(await store.get(`${p}k`, { revision: latest })), 'new');
      const w = store.watch(p, { fromRevision: old });
      try {
        for await (const _ of w) assert.fail('a compacted watch must not deliver');
        assert.fail('a compacted watch must fail');
      } catch (err) {
        assert.ok(isMusterError(err, 'MUSTER_COMPACTED'), String(err));
        assert.ok(typeof err.details.compactRevision === 'number' && err.details.compactRevision >= old);
      }
      // re-list and continue from the listed revision
      const listed = await store.range(p);
      const w2 = store.watch(p, { fromRevision: listed.revision + 1 });
      await store.put(`${p}k`, 'after');
      const { events } = await collectUntil(w2, (evs) => evs.length >= 1);
      w2.close();
      assert.equal(text(events[0]?.kv), 'after');
      await rejectsWith(store.compact(old), 'MUSTER_COMPACTED');
      await rejectsWith(store.compact((await store.headRevision()) + 100), 'MUSTER_FUTURE_REVISION');
    });

    test('close is idempotent and later calls fail with MUSTER_CLOSED', async () => {
      // Runs last: closes the shared store.
      await store.close();
      await store.close();
      await rejectsWith(store.put(`${p}x`, 'x'), 'MUSTER_CLOSED');
    });
  });
}
