/**
 * Binary encoding of journal entries and snapshots, and the CRC32 that guards them on disk.
 *
 * Everything is little-endian. Strings are binary strings (one char per byte, written as latin1)
 * with a u32 length: keys are the server's binary-string keys (see grpc/convert.ts), lease ids are
 * ASCII. Files written when keys were UTF-8 text hold the same bytes, so they read back unchanged; byte strings likewise;
 * revisions are f64 (exact for every revision a store can reach). The format is private to
 * `muster serve` and versioned by the file headers in wal.ts and snapshot.ts.
 */
import * as zlib from 'node:zlib';
import { MusterError } from '../errors.js';
import type { EngineSnapshot, JournalChange, JournalEntry } from '../store/index.js';

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

const nativeCrc = (zlib as { crc32?: (data: Uint8Array, value?: number) => number }).crc32;

/** CRC-32 (IEEE), native when Node has `zlib.crc32` (≥ 20.15), a table otherwise. */
export function crc32(data: Uint8Array): number {
  if (nativeCrc !== undefined) return nativeCrc(data) >>> 0;
  let c = 0xffffffff;
  for (let i = 0; i < data.length; i++)
    c = (CRC_TABLE[(c ^ (data[i] as number)) & 0xff] as number) ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** An append-only byte buffer that grows by doubling. */
export class BinWriter {
  #buf: Buffer;
  #pos = 0;

  constructor(initial = 256) {
    this.#buf = Buffer.allocUnsafe(initial);
  }

  #room(n: number): void {
    if (this.#pos + n <= this.#buf.length) return;
    let size = this.#buf.length * 2;
    while (size < this.#pos + n) size *= 2;
    const next = Buffer.allocUnsafe(size);
    this.#buf.copy(next, 0, 0, this.#pos);
    this.#buf = next;
  }

  u8(v: number): void {
    this.#room(1);
    this.#buf[this.#pos++] = v;
  }

  u32(v: number): void {
    this.#room(4);
    this.#buf.writeUInt32LE(v, this.#pos);
    this.#pos += 4;
  }

  f64(v: number): void {
    this.#room(8);
    this.#buf.writeDoubleLE(v, this.#pos);
    this.#pos += 8;
  }

  bytes(v: Uint8Array): void {
    this.u32(v.length);
    this.#room(v.length);
    this.#buf.set(v, this.#pos);
    this.#pos += v.length;
  }

  str(v: string): void {
    const n = v.length;
    this.u32(n);
    this.#room(n);
    this.#pos += this.#buf.write(v, this.#pos, 'latin1');
  }

  /** Forgets what was written, keeping the buffer for reuse. */
  reset(): void {
    this.#pos = 0;
  }

  /** The bytes written so far (a view, valid until the next write). */
  view(): Buffer {
    return this.#buf.subarray(0, this.#pos);
  }

  get length(): number {
    return this.#pos;
  }
}

/** Reads what {@link BinWriter} wrote; throws `MUSTER_CORRUPT_DATA` past the end. */
export class BinReader {
  readonly #buf: Buffer;
  #pos: number;
  readonly #end: number;

  constructor(buf: Buffer, start = 0, end = buf.length) {
    this.#buf = buf;
    this.#pos = start;
    this.#end = end;
  }

  #need(n: number): void {
    if (this.#pos + n > this.#end) {
      throw new MusterError('MUSTER_CORRUPT_DATA', 'a record ends before its fields do');
    }
  }

  u8(): number {
    this.#need(1);
    return this.#buf[this.#pos++] as number;
  }

  u32(): number {
    this.#need(4);
    const v = this.#buf.readUInt32LE(this.#pos);
    this.#pos += 4;
    return v;
  }

  f64(): number {
    this.#need(8);
    const v = this.#buf.readDoubleLE(this.#pos);
    this.#pos += 8;
    return v;
  }

  /** A copy of the next byte string (values outlive the file buffer). */
  bytes(): Uint8Array {
    const n = this.u32();
    this.#need(n);
    const v = new Uint8Array(n);
    v.set(this.#buf.subarray(this.#pos, this.#pos + n));
    this.#pos += n;
    return v;
  }

  /** The next byte string as a view of the underlying buffer (no copy). */
  bytesView(): Uint8Array {
    const n = this.u32();
    this.#need(n);
    const v = this.#buf.subarray(this.#pos, this.#pos + n);
    this.#pos += n;
    return v;
  }

  /** The next string; the very common lease id '0' is shared rather than allocated. */
  str(): string {
    if (
      this.#pos + 5 <= this.#end &&
      this.#buf[this.#pos + 4] === 0x30 &&
      this.#buf.readUInt32LE(this.#pos) === 1
    ) {
      this.#pos += 5;
      return '0';
    }
    const n = this.u32();
    this.#need(n);
    const v = this.#buf.toString('latin1', this.#pos, this.#pos + n);
    this.#pos += n;
    return v;
  }

  get done(): boolean {
    return this.#pos >= this.#end;
  }
}

const WRITE = 1;
const LEASE_GRANT = 2;
const LEASE_END = 3;
const COMPACT = 4;

/** Encodes one journal entry as a record payload. */
export function encodeEntry(entry: JournalEntry, w = new BinWriter()): Buffer {
  switch (entry.type) {
    case 'write':
      w.u8(WRITE);
      w.f64(entry.revision);
      w.u32(entry.changes.length);
      for (const c of entry.changes) {
        if ('deleted' in c) {
          w.u8(1);
          w.str(c.key);
        } else {
          w.u8(0);
          w.str(c.key);
          w.bytes(c.value);
          w.str(c.lease);
        }
      }
      break;
    case 'lease-grant':
      w.u8(LEASE_GRANT);
      w.str(entry.id);
      w.u32(entry.ttlSeconds);
      break;
    case 'lease-end':
      w.u8(LEASE_END);
      w.str(entry.id);
      break;
    case 'compact':
      w.u8(COMPACT);
      w.f64(entry.revision);
      break;
  }
  return w.view();
}

/** Decodes a record payload; throws `MUSTER_CORRUPT_DATA` for an unknown type or short record. */
export function decodeEntry(payload: Buffer): JournalEntry {
  const r = new BinReader(payload);
  const type = r.u8();
  switch (type) {
    case WRITE: {
      const revision = r.f64();
      const n = r.u32();
      const changes: JournalChange[] = [];
      for (let i = 0; i < n; i++) {
        const kind = r.u8();
        const key = r.str();
        if (kind === 1) changes.push({ key, deleted: true });
        else changes.push({ key, value: r.bytes(), lease: r.str() });
      }
      return { type: 'write', revision, changes };
    }
    case LEASE_GRANT:
      return { type: 'lease-grant', id: r.str(), ttlSeconds: r.u32() };
    case LEASE_END:
      return { type: 'lease-end', id: r.str() };
    case COMPACT:
      return { type: 'compact', revision: r.f64() };
    default:
      throw new MusterError('MUSTER_CORRUPT_DATA', `unknown log record type ${type}`);
  }
}

/** Encodes a whole engine snapshot. */
export function encodeSnapshot(s: EngineSnapshot, firstSegment: number): Buffer {
  const w = new BinWriter(1024 * 1024);
  w.f64(s.revision);
  w.f64(s.compactRevision);
  w.f64(firstSegment);
  w.str(s.nextLeaseId);
  w.u32(s.leases.length);
  for (const l of s.leases) {
    w.str(l.id);
    w.u32(l.ttlSeconds);
  }
  w.u32(s.kvs.length);
  for (const kv of s.kvs) {
    w.str(kv.key);
    w.bytes(kv.value);
    w.f64(kv.createRevision);
    w.f64(kv.modRevision);
    w.f64(kv.version);
    w.str(kv.lease);
  }
  return w.view();
}

/** Decodes {@link encodeSnapshot}'s output. */
export function decodeSnapshot(
  buf: Buffer,
  start: number,
): { snapshot: EngineSnapshot; firstSegment: number } {
  const r = new BinReader(buf, start);
  const revision = r.f64();
  const compactRevision = r.f64();
  const firstSegment = r.f64();
  const nextLeaseId = r.str();
  const leases: { id: string; ttlSeconds: number }[] = [];
  for (let n = r.u32(); n > 0; n--) leases.push({ id: r.str(), ttlSeconds: r.u32() });
  const kvs: EngineSnapshot['kvs'][number][] = [];
  // Values are views of the file buffer: one allocation for all of them (values are never mutated).
  for (let n = r.u32(); n > 0; n--) {
    kvs.push({
      key: r.str(),
      value: r.bytesView(),
      createRevision: r.f64(),
      modRevision: r.f64(),
      version: r.f64(),
      lease: r.str(),
    });
  }
  return { snapshot: { revision, compactRevision, nextLeaseId, leases, kvs }, firstSegment };
}
