import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { isMusterError } from '../../src/errors.js';
import { readStartTime } from '../../src/process/index.js';
import { DurableStore } from '../../src/server/durable-store.js';
import { SEGMENT_PREALLOCATE_BYTES } from '../../src/server/wal.js';
import { textOf } from '../../src/store/keys.js';
import type { MemoryStore } from '../../src/store/memory/memory-store.js';

const dirs: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'muster-durable-'));
  dirs.push(d);
  return d;
}
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** A copy of the data directory as a crash would leave it (the live store keeps running). */
function crashCopy(dir: string): string {
  const copy = tempDir();
  cpSync(dir, copy, { recursive: true });
  rmSync(join(copy, 'LOCK'), { force: true });
  return copy;
}

async function dump(store: MemoryStore): Promise<Record<string, string>> {
  const r = await store.range('');
  return Object.fromEntries(
    r.kvs.map((kv) => [
      kv.key,
      `${textOf(kv.value)}@${kv.createRevision}/${kv.modRevision}/${kv.version}/${kv.lease}`,
    ]),
  );
}

/** The offset after the last record of a segment (where its preallocated zeros start). */
function endOfRecords(bytes: Buffer): number {
  let at = 8;
  while (at + 8 <= bytes.length && bytes.readUInt32LE(at) > 0) at += 8 + bytes.readUInt32LE(at);
  return at;
}

function segments(dir: string): string[] {
  return readdirSync(dir)
    .filter((n) => n.startsWith('wal-'))
    .sort();
}

describe('durable store: log, snapshots, recovery', () => {
  test('a clean restart keeps every key, revision, lease and the compaction point', async () => {
    const dir = tempDir();
    const a = await DurableStore.open({ dataDir: dir });
    const lease = await a.store.grantLease(30);
    await a.store.put('/a', 'one');
    await a.store.put('/a', 'two');
    await a.store.put('/b', 'leased', { lease: lease.id });
    await a.store.txn(
      [{ key: '/a', target: 'version', op: '=', value: 2 }],
      [{ type: 'put', key: '/c', value: 'c' }],
    );
    await a.store.delete('/c');
    await a.store.compact(3);
    const before = await dump(a.store);
    const rev = a.store.revision;
    await a.close();
    await a.close(); // idempotent

    const b = await DurableStore.open({ dataDir: dir });
    assert.deepEqual(await dump(b.store), before);
    assert.equal(b.store.revision, rev);
    const info = await b.store.leaseTimeToLive(lease.id);
    assert.equal(info?.grantedTtlSeconds, 30);
    assert.deepEqual(info?.keys, ['/b']);
    await assert.rejects(b.store.get('/a', { revision: 2 }), (e) => isMusterError(e, 'MUSTER_COMPACTED'));
    const next = await b.store.put('/d', 'd');
    assert.equal(next.revision, rev + 1, 'revisions continue where they were');
    // A revoked lease stays revoked, and its keys stay deleted, after another restart.
    await b.store.revokeLease(lease.id);
    await b.close();
    const c = await DurableStore.open({ dataDir: dir });
    assert.equal(await c.store.get('/b'), undefined);
    assert.equal(await c.store.leaseTimeToLive(lease.id), undefined);
    const l2 = await c.store.grantLease(5);
    assert.notEqual(l2.id, lease.id, 'lease ids are never reused');
    await c.close();
  });

  test('a crash keeps every acknowledged write (no close, copy of the directory)', async () => {
    const dir = tempDir();
    const a = await DurableStore.open({ dataDir: dir });
    const writes = [];
    for (let i = 0; i < 200; i++) writes.push(a.store.put(`/k/${i % 17}`, String(i)));
    await Promise.all(writes);
    const lease = await a.store.grantLease(60);
    await a.store.put('/leased', 'x', { lease: lease.id });
    const before = await dump(a.store);
    const copy = crashCopy(dir);
    const b = await DurableStore.open({ dataDir: copy });
    assert.deepEqual(await dump(b.store), before);
    assert.equal(b.recovery.truncatedBytes, 0);
    assert.deepEqual((await b.store.leaseTimeToLive(lease.id))?.keys, ['/leased']);
    await b.close();
    await a.close();
  });

  test('periodic snapshots bound the log; recovery from snapshot + later segments is exact', async () => {
    const dir = tempDir();
    const a = await DurableStore.open({ dataDir: dir, snapshotRecords: 50 });
    const lease = await a.store.grantLease(60);
    for (let i = 0; i < 400; i++) {
      await a.store.put(`/s/${i % 60}`, String(i), i % 7 === 0 ? { lease: lease.id } : {});
      if (i % 100 === 99) await a.snapshot();
    }
    await a.snapshot();
    assert.ok(segments(dir).length <= 2, `old segments are deleted, found ${segments(dir).join(', ')}`);
    assert.equal(readdirSync(dir).filter((n) => n.startsWith('snap-')).length, 1);
    for (let i = 0; i < 30; i++) await a.store.put(`/t/${i}`, 'after');
    const before = await dump(a.store);
    const copy = crashCopy(dir);
    const b = await DurableStore.open({ dataDir: copy });
    assert.deepEqual(await dump(b.store), before);
    assert.ok(b.recovery.snapshotRevision > 0);
    const info = await b.store.leaseTimeToLive(lease.id);
    assert.ok((info?.keys.length ?? 0) > 0, 'lease keys survive the snapshot');
    await b.store.revokeLease(lease.id);
    assert.equal((await b.store.range('/s/')).kvs.filter((kv) => kv.lease !== '0').length, 0);
    await b.close();
    await a.close();
  });

  test('a torn tail is cut off and logged; the acknowledged writes are intact', async () => {
    const dir = tempDir();
    const a = await DurableStore.open({ dataDir: dir });
    for (let i = 0; i < 20; i++) await a.store.put(`/torn/${i}`, String(i));
    const before = await dump(a.store);
    const copy = crashCopy(dir);
    await a.close();
    const last = join(copy, segments(copy).at(-1) as string);
    // Half a record where the next one would go (over the preallocated zeros): a length and CRC,
    // and fewer payload bytes than promised.
    const partial = Buffer.alloc(20, 7);
    partial.writeUInt32LE(200, 0);
    const bytes = readFileSync(last);
    bytes.set(partial, endOfRecords(bytes));
    writeFileSync(last, bytes);
    const warnings: unknown[] = [];
    const logger = { warn: (o: unknown) => warnings.push(o), info: () => undefined, error: () => undefined };
    const b = await DurableStore.open({ dataDir: copy, logger: logger as never });
    assert.equal(b.recovery.truncatedBytes, 20);
    assert.equal(warnings.length, 1);
    assert.deepEqual(await dump(b.store), before);
    const r = await b.store.put('/torn/new', 'x');
    assert.equal(r.revision, 22);
    await b.close();
    const c = await DurableStore.open({ dataDir: copy });
    assert.equal(textOf((await c.store.get('/torn/new'))?.value ?? new Uint8Array()), 'x');
    await c.close();
  });

  test('segments are preallocated with zeros, grow past the preallocation, and recover exactly', async () => {
    const dir = tempDir();
    const a = await DurableStore.open({ dataDir: dir, snapshotRecords: Number.MAX_SAFE_INTEGER });
    const first = join(dir, segments(dir).at(-1) as string);
    assert.equal(statSync(first).size, SEGMENT_PREALLOCATE_BYTES, 'a new segment is preallocated');
    // More than one preallocation step of records, written by concurrent writers (batches).
    const value = 'v'.repeat(1000);
    for (let i = 0; i < 1200; i += 100) {
      await Promise.all(Array.from({ length: 100 }, (_, j) => a.store.put(`/grow/${i + j}`, value)));
    }
    assert.ok(statSync(first).size > SEGMENT_PREALLOCATE_BYTES, 'the segment grew');
    assert.equal(statSync(first).size % SEGMENT_PREALLOCATE_BYTES, 0);
    const before = await dump(a.store);
    const copy = crashCopy(dir);
    await a.close();
    const b = await DurableStore.open({ dataDir: copy });
    assert.equal(b.recovery.truncatedBytes, 0, 'the zeros after the last record are a clean end');
    assert.equal(b.recovery.records, 1200);
    assert.deepEqual(await dump(b.store), before);
    await b.close();
  });

  test('corruption before the tail stops start-up with MUSTER_CORRUPT_DATA', async () => {
    const dir = tempDir();
    const a = await DurableStore.open({ dataDir: dir });
    for (let i = 0; i < 20; i++) await a.store.put(`/bad/${i}`, `value-${i}`);
    const copy = crashCopy(dir);
    await a.close();
    const file = join(copy, segments(copy).at(-1) as string);
    const bytes = readFileSync(file);
    bytes[30] = (bytes[30] as number) ^ 0xff; // inside the first record
    writeFileSync(file, bytes);
    await assert.rejects(DurableStore.open({ dataDir: copy }), (e) => {
      assert.ok(isMusterError(e, 'MUSTER_CORRUPT_DATA'), String(e));
      assert.match(e.message, /corrupt at byte 8/);
      return true;
    });
  });

  test('a headerless segment is blank only when it cannot have held records; otherwise corruption', async () => {
    const dir = tempDir();
    const a = await DurableStore.open({ dataDir: dir });
    for (let i = 0; i < 5; i++) await a.store.put(`/blank/${i}`, `value-${i}`);
    const copy = crashCopy(dir);
    await a.close();
    const newest = segments(copy).at(-1) as string;
    const n = Number(/\d{16}/.exec(newest)?.[0]);
    const name = (k: number): string => `wal-${String(k).padStart(16, '0')}.log`;
    const emptySegment = Buffer.alloc(SEGMENT_PREALLOCATE_BYTES);
    Buffer.from('MSTRWAL2', 'latin1').copy(emptySegment);
    // Before the newest: a file as long as a preallocated segment with its header zeroed once held
    // records (a segment is preallocated and synced before any record): corruption, not a blank.
    const zeroed = crashCopy(copy);
    writeFileSync(join(zeroed, name(n + 1)), Buffer.alloc(SEGMENT_PREALLOCATE_BYTES));
    writeFileSync(join(zeroed, name(n + 2)), emptySegment);
    await assert.rejects(DurableStore.open({ dataDir: zeroed }), (e) => {
      assert.ok(isMusterError(e, 'MUSTER_CORRUPT_DATA'), String(e));
      assert.match(e.message, /bad header/);
      return true;
    });
    // The newest segment with a bad header and data after it: corruption too.
    const scribbled = crashCopy(copy);
    const bad = Buffer.from(emptySegment);
    bad[0] = 0x58;
    bad[100] = 1;
    writeFileSync(join(scribbled, name(n + 1)), bad);
    await assert.rejects(DurableStore.open({ dataDir: scribbled }), (e) =>
      isMusterError(e, 'MUSTER_CORRUPT_DATA'),
    );
    // A 0-byte segment before the newest (what older versions left) and a half-written header in
    // the newest are blanks: skipped and replaced, every write kept.
    writeFileSync(join(copy, name(n + 1)), '');
    writeFileSync(join(copy, name(n + 2)), emptySegment);
    writeFileSync(join(copy, name(n + 3)), Buffer.from('MSTR', 'latin1'));
    const b = await DurableStore.open({ dataDir: copy });
    assert.equal(textOf((await b.store.get('/blank/4'))?.value ?? new Uint8Array()), 'value-4');
    assert.ok(segments(copy).includes(name(n + 3)), 'the blank newest number is reused');
    assert.equal(
      readFileSync(join(copy, name(n + 3)))
        .subarray(0, 8)
        .toString('latin1'),
      'MSTRWAL2',
    );
    await b.close();
  });

  test('a second server on the same directory is refused with MUSTER_DATA_DIR_LOCKED', async () => {
    const dir = tempDir();
    const a = await DurableStore.open({ dataDir: dir });
    await assert.rejects(DurableStore.open({ dataDir: dir }), (e) =>
      isMusterError(e, 'MUSTER_DATA_DIR_LOCKED'),
    );
    await a.close();
    const b = await DurableStore.open({ dataDir: dir });
    await b.close();
  });

  test('LOCK holds the pid and its start time; a live pid with another start time is stale (pid reuse)', async () => {
    const dir = tempDir();
    const a = await DurableStore.open({ dataDir: dir });
    const [pid, start] = readFileSync(join(dir, 'LOCK'), 'utf8').trim().split(' ');
    assert.equal(Number(pid), process.pid);
    assert.equal(start, readStartTime(process.pid));
    await a.close();
    // A live process (the test runner that started this file) that never opened the directory:
    // the pid as a lock written before a reboot would find it.
    const other = process.ppid;
    const otherStart = readStartTime(other);
    assert.ok(otherStart !== undefined, 'the parent process has a start time');
    writeFileSync(join(dir, 'LOCK'), `${other} ${Number(otherStart) + 1}\n`);
    const b = await DurableStore.open({ dataDir: dir });
    assert.equal(
      readFileSync(join(dir, 'LOCK'), 'utf8').trim(),
      `${process.pid} ${readStartTime(process.pid)}`,
    );
    await b.close();
    // The same pid with its own start time is that process: refused.
    writeFileSync(join(dir, 'LOCK'), `${other} ${otherStart}\n`);
    await assert.rejects(DurableStore.open({ dataDir: dir }), (e) =>
      isMusterError(e, 'MUSTER_DATA_DIR_LOCKED'),
    );
    // A lock from an older version (the pid alone) is judged by the pid.
    writeFileSync(join(dir, 'LOCK'), `${other}\n`);
    await assert.rejects(DurableStore.open({ dataDir: dir }), (e) =>
      isMusterError(e, 'MUSTER_DATA_DIR_LOCKED'),
    );
    // …and a dead pid, with or without a start time, is free.
    writeFileSync(join(dir, 'LOCK'), `${2 ** 22 + 1} 12345\n`);
    const c = await DurableStore.open({ dataDir: dir });
    await c.close();
  });
});

describe('durable store: history after a snapshot', () => {
  test('reads and watches before the snapshot answer MUSTER_COMPACTED with its revision', async () => {
    const dir = tempDir();
    const a = await DurableStore.open({ dataDir: dir });
    const first = await a.store.put('/h/k', 'one');
    await a.store.put('/h/k', 'two');
    const head = a.store.revision;
    await a.close(); // writes a snapshot at the head
    const b = await DurableStore.open({ dataDir: dir });
    await assert.rejects(b.store.get('/h/k', { revision: first.revision }), (e) => {
      assert.ok(isMusterError(e, 'MUSTER_COMPACTED'));
      assert.equal(e.details.compactRevision, head);
      return true;
    });
    assert.equal(textOf((await b.store.get('/h/k', { revision: head }))?.value ?? new Uint8Array()), 'two');
    const w = b.store.watch('/h/', { fromRevision: first.revision });
    await assert.rejects(
      (async () => {
        for await (const _ of w) assert.fail('no events from before the snapshot');
      })(),
      (e) => isMusterError(e, 'MUSTER_COMPACTED'),
    );
    await b.close();
  });
});
