/**
 * The relay's shared table: one small file per relayed prefix that the relay rewrites in place and
 * every process of the host reads with one `pread`, so a new version is held by all of them the
 * moment the relay has written it — without waking 150 processes to tell them.
 *
 * Layout (little-endian), a {@link TABLE_HEADER_BYTES}-byte header, then the body:
 *
 * | offset | field                                                                          |
 * |--------|--------------------------------------------------------------------------------|
 * | 0      | magic `MTB1`                                                                   |
 * | 4      | FNV-1a of bytes 8–63 (a torn header fails it)                                  |
 * | 8      | body length (u32)                                                              |
 * | 12     | FNV-1a of the body (a torn body fails it)                                      |
 * | 16     | body revision (f64): the body is the prefix's full content at this revision     |
 * | 24     | host-monotonic ms at which that body was written (f64)                          |
 * | 32     | proof revision (f64, ≤ body revision)                                           |
 * | 40     | host-monotonic ms as of which the relay's mirror was proven complete (f64; −∞)  |
 *
 * The body is JSON: `{"kvs":[WireKv…]}`. The writer rewrites the body first and the header last, in
 * two `pwrite`s; a reader that overlaps a write sees a checksum that does not match and tries again
 * (a torn read could pass only by a 32-bit checksum collision whose bytes also parse as the JSON).
 * Nothing is ever fsynced: the table lives as long as its relay (put the socket on a tmpfs such as
 * `/run`), and a reader that cannot open or verify it falls back to the relay's socket.
 */
import { closeSync, lstatSync, mkdirSync, openSync, readSync, rmSync, writeSync } from 'node:fs';
import { MusterError } from '../errors.js';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import type { KeyValue } from '../store/index.js';
import { decodeKv, encodeKv, type WireKv } from './relay-wire.js';

export const TABLE_HEADER_BYTES = 64;
const MAGIC = 0x3142544d; // 'MTB1'
/** Reads that overlap a write are retried this many times before the poll gives up (until the next). */
const READ_ATTEMPTS = 3;

/** The table file for `prefix` in the relay's table directory. */
export function tablePath(dir: string, prefix: string): string {
  return join(dir, createHash('sha256').update(prefix).digest('hex').slice(0, 32));
}

/** The table directory of a relay listening on Unix socket `socket`. */
export function tableDirFor(socket: string): string {
  return `${socket}.tables`;
}

/**
 * Creates the table directory, or checks the one that is there: it must be a directory owned by this
 * user and closed to everyone else, since whoever can write in it can feed versions and proofs to
 * every process of the host. Throws `MUSTER_INVALID_ARGUMENT` otherwise.
 */
export function prepareTableDir(dir: string): void {
  try {
    mkdirSync(dir, { mode: 0o700 });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'EEXIST')
      throw new MusterError(
        'MUSTER_INVALID_ARGUMENT',
        `cannot create ${dir} (${code ?? String(err)}); check that the socket's directory exists and is writable`,
        { cause: err, details: { dir } },
      );
  }
  const st = lstatSync(dir);
  const uid = process.getuid?.();
  if (!st.isDirectory() || (uid !== undefined && st.uid !== uid) || (st.mode & 0o077) !== 0)
    throw new MusterError(
      'MUSTER_INVALID_ARGUMENT',
      `${dir} must be a directory owned by this user with mode 0700 (it holds what the relay tells its processes); ` +
        `it is ${st.isDirectory() ? `owned by uid ${st.uid} with mode 0${(st.mode & 0o777).toString(8)}` : 'not a directory'}: remove it, or listen elsewhere`,
      { details: { dir } },
    );
}

function fnv1a(bytes: Uint8Array, from = 0, to = bytes.length): number {
  let h = 0x811c9dc5;
  for (let i = from; i < to; i++) {
    h ^= bytes[i] as number;
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** The relay's side: rewrites one prefix's table. Errors are the caller's to report. */
export class TableWriter {
  readonly path: string;
  readonly #fd: number;
  readonly #header = Buffer.alloc(TABLE_HEADER_BYTES);
  #bodyLength = 0;
  #bodySum = 0;
  #bodyRevision = 0;
  #bodyWrittenMono = 0;
  #proofRevision = 0;
  #provenMono = -Infinity;
  #closed = false;

  /** `dir` must exist and be private to this user (see {@link prepareTableDir}). */
  constructor(dir: string, prefix: string) {
    this.path = tablePath(dir, prefix);
    // A new file, never the old one rewritten: a reader still holding a dead relay's table must not
    // start reading this relay's proofs (the two may not even serve the same store).
    rmSync(this.path, { force: true });
    this.#fd = openSync(this.path, 'wx', 0o600);
    try {
      this.#writeHeader();
    } catch (err) {
      closeSync(this.#fd);
      throw err;
    }
  }

  /** Replaces the body: the prefix's full content at `revision`, written at host-monotonic `mono`. */
  writeBody(kvs: Iterable<KeyValue>, revision: number, mono: number): void {
    if (this.#closed) return;
    const wire: WireKv[] = [];
    for (const kv of kvs) wire.push(encodeKv(kv));
    const body = Buffer.from(JSON.stringify({ kvs: wire }));
    writeSync(this.#fd, body, 0, body.length, TABLE_HEADER_BYTES);
    this.#bodyLength = body.length;
    this.#bodySum = fnv1a(body);
    this.#bodyRevision = revision;
    this.#bodyWrittenMono = mono;
    this.#writeHeader();
  }

  /** The relay's mirror holds every event up to `revision` and was complete as of host-monotonic `mono`. */
  writeProof(revision: number, mono: number): void {
    if (this.#closed) return;
    this.#proofRevision = Math.min(revision, this.#bodyRevision);
    this.#provenMono = mono;
    this.#writeHeader();
  }

  #writeHeader(): void {
    const h = this.#header;
    h.writeUInt32LE(MAGIC, 0);
    h.writeUInt32LE(this.#bodyLength, 8);
    h.writeUInt32LE(this.#bodySum, 12);
    h.writeDoubleLE(this.#bodyRevision, 16);
    h.writeDoubleLE(this.#bodyWrittenMono, 24);
    h.writeDoubleLE(this.#proofRevision, 32);
    h.writeDoubleLE(this.#provenMono, 40);
    h.writeUInt32LE(fnv1a(h, 8), 4);
    writeSync(this.#fd, h, 0, TABLE_HEADER_BYTES, 0);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    // Readers that still hold the file see the proof stop advancing and go stale: mark it unproven.
    this.#provenMono = -Infinity;
    try {
      this.#writeHeader();
    } finally {
      closeSync(this.#fd);
    }
  }
}

/** What one read of a table found. */
export interface TableHeader {
  readonly bodyRevision: number;
  readonly bodyWrittenMono: number;
  readonly proofRevision: number;
  readonly provenMono: number;
}

export interface TableBody extends TableHeader {
  readonly kvs: readonly KeyValue[];
}

/** A process's side: reads one table. Never throws; `undefined` means "nothing trustworthy now". */
export class TableReader {
  readonly path: string;
  readonly #fd: number;
  #buf = Buffer.alloc(TABLE_HEADER_BYTES + 4096);
  #closed = false;

  private constructor(path: string, fd: number) {
    this.path = path;
    this.#fd = fd;
  }

  /** Opens the table at `path`, or `undefined` when it is not there or not readable. */
  static open(path: string): TableReader | undefined {
    try {
      return new TableReader(path, openSync(path, 'r'));
    } catch {
      return undefined;
    }
  }

  /** The header; `undefined` when it is torn or not a table. */
  header(): TableHeader | undefined {
    for (let attempt = 0; attempt < READ_ATTEMPTS; attempt++) {
      const h = this.#read(TABLE_HEADER_BYTES);
      if (h !== undefined) return h;
    }
    return undefined;
  }

  /** Header and body from one consistent read; `undefined` when every attempt overlapped a write. */
  body(): TableBody | undefined {
    for (let attempt = 0; attempt < READ_ATTEMPTS; attempt++) {
      const h = this.#read(this.#buf.length);
      if (h === undefined) continue;
      const length = this.#buf.readUInt32LE(8);
      if (TABLE_HEADER_BYTES + length > this.#buf.length) {
        this.#buf = Buffer.alloc(2 * (TABLE_HEADER_BYTES + length));
        attempt--; // growing the buffer is not a failed attempt
        continue;
      }
      if (fnv1a(this.#buf, TABLE_HEADER_BYTES, TABLE_HEADER_BYTES + length) !== this.#buf.readUInt32LE(12))
        continue;
      try {
        const parsed = JSON.parse(
          this.#buf.toString('utf8', TABLE_HEADER_BYTES, TABLE_HEADER_BYTES + length),
        ) as { kvs: WireKv[] };
        return { ...h, kvs: parsed.kvs.map(decodeKv) };
      } catch {
        // a checksum collision with a torn body: try again
      }
    }
    return undefined;
  }

  #read(bytes: number): TableHeader | undefined {
    if (this.#closed) return undefined;
    let n: number;
    try {
      n = readSync(this.#fd, this.#buf, 0, bytes, 0);
    } catch {
      return undefined;
    }
    const b = this.#buf;
    if (
      n < TABLE_HEADER_BYTES ||
      b.readUInt32LE(0) !== MAGIC ||
      fnv1a(b, 8, TABLE_HEADER_BYTES) !== b.readUInt32LE(4)
    )
      return undefined;
    return {
      bodyRevision: b.readDoubleLE(16),
      bodyWrittenMono: b.readDoubleLE(24),
      proofRevision: b.readDoubleLE(32),
      provenMono: b.readDoubleLE(40),
    };
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    closeSync(this.#fd);
  }
}
