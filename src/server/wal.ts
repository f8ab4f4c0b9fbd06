/**
 * The write-ahead log of `muster serve`: the memory engine's {@link Journal} on disk.
 *
 * The log is a sequence of segment files `wal-<n>.log` in the data directory. Each starts with an
 * 8-byte magic and holds records framed as `u32 length | u32 CRC32(payload) | payload`, followed by
 * zeros: segments are preallocated (written with zeros and synced) in steps of
 * {@link SEGMENT_PREALLOCATE_BYTES}, so that a record write changes no file size and no block
 * allocation and its sync is a data write alone, without a file-system journal commit (as etcd
 * preallocates its WAL files). Appends are buffered in memory; {@link Wal.flush} writes everything
 * appended so far with one synchronous write (O_DSYNC, or a write and an `fdatasync`), so that writes
 * arriving during a sync share the next one (group commit). A snapshot rotates to a new segment so
 * that older segments can be deleted once the snapshot is durable.
 *
 * Segments are created under a temporary name and renamed into place once their header is synced
 * ({@link createSegment}), so a segment that has its name always has its header.
 *
 * Recovery ({@link readSegment}) checks every record. Zeros where the next record would start are
 * the clean end of a segment. A bad record at the end of the newest segment (nothing but zeros after
 * it) is a torn write from a crash and is cut off (it was never acknowledged: acknowledgement waits
 * for the sync); a bad record followed by good ones, or in an older segment, is corruption and stops
 * start-up with `MUSTER_CORRUPT_DATA`.
 */
import { closeSync, constants, fsyncSync, openSync, writeSync } from 'node:fs';
import { access, type FileHandle, open, readFile, rename, rm, truncate } from 'node:fs/promises';
import { join } from 'node:path';
import { MusterError } from '../errors.js';
import type { Journal, JournalEntry } from '../store/index.js';
import { BinWriter, crc32, encodeEntry } from './codec.js';
import { crashPoint } from './crash-point.js';

/**
 * Magic at the start of every segment; the trailing digit is the format version. Version 2 adds the
 * zero-filled preallocated tail (version 1 segments, without it, are still read).
 */
export const WAL_MAGIC = Buffer.from('MSTRWAL2', 'latin1');
const WAL_MAGIC_V1 = Buffer.from('MSTRWAL1', 'latin1');
/**
 * Segments grow by this many zeroed bytes at a time (about 10,000 small records): large enough that
 * the extension (a few ms) is rare, small enough that a new segment is ready in a few ms.
 */
export const SEGMENT_PREALLOCATE_BYTES = 1024 * 1024;
/** Bytes before each payload: length and CRC. */
const FRAME = 8;
/** No record is larger than this (gRPC refuses requests above ~2 MiB long before). */
export const MAX_RECORD_BYTES = 64 * 1024 * 1024;

/** The file name of segment `n`. */
export function segmentName(n: number): string {
  return `wal-${String(n).padStart(16, '0')}.log`;
}

/** Parses a segment file name; `undefined` for other files. */
export function segmentNumber(name: string): number | undefined {
  const m = /^wal-(\d{16})\.log$/.exec(name);
  return m === null ? undefined : Number(m[1]);
}

/** Frames one payload as a record. */
export function frameRecord(payload: Uint8Array): Buffer {
  const rec = Buffer.allocUnsafe(FRAME + payload.length);
  rec.writeUInt32LE(payload.length, 0);
  rec.writeUInt32LE(crc32(payload), 4);
  rec.set(payload, FRAME);
  return rec;
}

/** The result of reading one segment at start-up. */
export interface SegmentRead {
  readonly payloads: Buffer[];
  /** Bytes of good records (including the magic); the file is cut here when `torn`. */
  readonly goodLength: number;
  /** True when a torn tail was found (only allowed in the newest segment). */
  readonly torn: boolean;
  /** Bytes of the torn tail up to its last non-zero byte (0 when not torn). */
  readonly tornBytes: number;
  readonly fileLength: number;
  /**
   * True for a segment that was created but never written: no header, nothing after it (see
   * {@link isBlank}). It holds no records.
   */
  readonly blank: boolean;
}

/** A block of zeros for preallocation and for recognising it (allocated on first use). */
let zeros: Buffer | undefined;

/** True when `buf` holds only zeros from `at` on. */
function zerosFrom(buf: Buffer, at: number): boolean {
  zeros ??= Buffer.alloc(SEGMENT_PREALLOCATE_BYTES);
  for (let i = at; i < buf.length; i += zeros.length) {
    const part = buf.subarray(i, Math.min(buf.length, i + zeros.length));
    if (!part.equals(zeros.subarray(0, part.length))) return false;
  }
  return true;
}

/** The offset after the last non-zero byte of `buf`. */
function dataEnd(buf: Buffer): number {
  let end = buf.length;
  while (end > 0 && buf[end - 1] === 0) end--;
  return end;
}

/** True when a well-formed record starts at `at`. */
function recordAt(buf: Buffer, at: number): number | undefined {
  if (at + FRAME > buf.length) return undefined;
  const len = buf.readUInt32LE(at);
  if (len === 0 || len > MAX_RECORD_BYTES || at + FRAME + len > buf.length) return undefined;
  if (crc32(buf.subarray(at + FRAME, at + FRAME + len)) !== buf.readUInt32LE(at + 4)) return undefined;
  return len;
}

/**
 * True when a segment without a valid header is one that was created but never written, which only
 * a crash during creation by an older version of muster leaves (it created `wal-<n>.log` first
 * and wrote the header after; the current {@link createSegment} renames a segment into place only
 * once its header is synced, so it never leaves one):
 * - its header bytes are zeros or bytes of the magic (a header write that did not finish), and
 * - in the newest segment, everything after the header is zeros (an unfinished preallocation; no
 *   record was ever written, since records are written only after the creation is synced);
 * - in an older segment, the file is shorter than the header. That is what such a crash leaves
 *   (0 bytes), and what earlier versions' recovery made of a blank newest segment (cut to 0 bytes)
 *   before creating the next one after it — the data directories issue 13 describes. A segment
 *   that once held acknowledged records was preallocated and synced first, so it is never this
 *   short; a longer file without a header is corruption and is reported as such.
 */
function isBlank(buf: Buffer, last: boolean): boolean {
  const headLength = Math.min(buf.length, WAL_MAGIC.length);
  for (let i = 0; i < headLength; i++) {
    const b = buf[i];
    if (b !== 0 && b !== WAL_MAGIC[i] && b !== WAL_MAGIC_V1[i]) return false;
  }
  return last ? zerosFrom(buf, headLength) : buf.length < WAL_MAGIC.length;
}

/**
 * Reads and checks every record of a segment. In the newest segment (`last`), a bad record with
 * nothing valid after it is a torn tail; anywhere else it is corruption.
 *
 * Throws `MUSTER_CORRUPT_DATA` naming the file and offset.
 */
export async function readSegment(path: string, last: boolean): Promise<SegmentRead> {
  const buf = await readFile(path);
  const corrupt = (offset: number, why: string): MusterError =>
    new MusterError(
      'MUSTER_CORRUPT_DATA',
      `the write-ahead log ${path} is corrupt at byte ${offset} (${why}); restore the data directory from a backup`,
      { details: { file: path, offset } },
    );
  const head = buf.subarray(0, WAL_MAGIC.length);
  if (buf.length < WAL_MAGIC.length || !(head.equals(WAL_MAGIC) || head.equals(WAL_MAGIC_V1))) {
    if (isBlank(buf, last)) {
      return { payloads: [], goodLength: 0, torn: false, tornBytes: 0, fileLength: buf.length, blank: true };
    }
    throw corrupt(0, 'bad header');
  }
  const payloads: Buffer[] = [];
  let at = WAL_MAGIC.length;
  while (at < buf.length) {
    const len = recordAt(buf, at);
    if (len === undefined) {
      // The preallocated zeros after the last record: the segment's clean end.
      if (zerosFrom(buf, at))
        return { payloads, goodLength: at, torn: false, tornBytes: 0, fileLength: buf.length, blank: false };
      if (!last) throw corrupt(at, 'bad record in a segment that is not the newest');
      // Torn tail or corruption? Corruption leaves good records after the bad one.
      const end = dataEnd(buf);
      for (let q = at + 1; q + FRAME < end; q++) {
        if (recordAt(buf, q) !== undefined) throw corrupt(at, 'bad record followed by good records');
      }
      return {
        payloads,
        goodLength: at,
        torn: true,
        tornBytes: end - at,
        fileLength: buf.length,
        blank: false,
      };
    }
    payloads.push(buf.subarray(at + FRAME, at + FRAME + len));
    at += FRAME + len;
  }
  return { payloads, goodLength: at, torn: false, tornBytes: 0, fileLength: buf.length, blank: false };
}

/** Cuts a torn tail off a segment and syncs it. */
export async function truncateSegment(path: string, length: number): Promise<void> {
  await truncate(path, length);
  crashPoint('wal.truncated');
  const fd = openSync(path, 'r+');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Fsyncs a directory, so that created, renamed and deleted names are durable. */
export function syncDir(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

interface Waiter {
  readonly seq: number;
  readonly resolve: () => void;
  readonly reject: (err: Error) => void;
}

/** The log writer. Create with {@link Wal.create}. */
export class Wal implements Journal {
  readonly #dir: string;
  #segment: number;
  #fh: FileHandle;
  /** Where the next record goes, and the segment's (zero-filled) size. */
  #offset = WAL_MAGIC.length;
  #allocated: number;
  #pending: Buffer[] = [];
  #appended = 0;
  #synced = 0;
  #waiters: Waiter[] = [];
  #running: Promise<void> | undefined;
  #rotateWaiters: { resolve: (n: number) => void; reject: (e: Error) => void }[] = [];
  #error: Error | undefined;
  #closed = false;
  #scheduled = false;
  readonly #scratch = new BinWriter(4096);
  /** Records and bytes appended since the last rotation (the snapshot policy reads them). */
  recordsInSegment = 0;
  /** Told after each synchronous write, with its duration and batch (metrics); must not throw. */
  onSync: ((sync: { seconds: number; records: number; bytes: number }) => void) | undefined;
  bytesInSegment = 0;

  private constructor(dir: string, segment: number, fh: FileHandle) {
    this.#dir = dir;
    this.#segment = segment;
    this.#fh = fh;
    this.#allocated = SEGMENT_PREALLOCATE_BYTES;
  }

  /** Creates segment `segment` (which must not exist) and returns a log writing to it. */
  static async create(dir: string, segment: number): Promise<Wal> {
    return new Wal(dir, segment, await createSegment(dir, segment));
  }

  /** The segment being written. */
  get segment(): number {
    return this.#segment;
  }

  append(entry: JournalEntry): void {
    if (this.#closed) return;
    this.#scratch.reset();
    const rec = frameRecord(encodeEntry(entry, this.#scratch));
    this.#pending.push(rec);
    this.#appended++;
    this.recordsInSegment++;
    this.bytesInSegment += rec.length;
  }

  flush(): Promise<void> {
    if (this.#error !== undefined) return Promise.reject(this.#error);
    const seq = this.#appended;
    if (seq <= this.#synced) return Promise.resolve();
    const done = new Promise<void>((resolve, reject) => this.#waiters.push({ seq, resolve, reject }));
    this.#kick();
    return done;
  }

  /**
   * Switches to a new segment once everything already handed to the disk is synced. Resolves to the
   * new segment's number; every record in older segments is durable by then.
   */
  rotate(): Promise<number> {
    if (this.#error !== undefined) return Promise.reject(this.#error);
    const done = new Promise<number>((resolve, reject) => this.#rotateWaiters.push({ resolve, reject }));
    this.#kick();
    return done;
  }

  /** Flushes what is pending and closes the file; idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    try {
      await this.flush();
    } finally {
      this.#closed = true;
      await this.#running?.catch(() => undefined);
      await this.#fh.close().catch(() => undefined);
    }
  }

  /**
   * Starts the writer after the current event-loop turn, not now: requests that arrive together
   * reach their handlers one after another (one socket read may hold many; several connections are
   * read in turns of their own), so a writer started by the first request's flush would write that
   * record alone and the others would wait for the next sync. `setImmediate` runs once every request read in this turn has appended (measured with
   * 64 puts in flight: one write per put before, one write per 64 puts after).
   */
  #kick(): void {
    if (this.#running !== undefined || this.#scheduled) return;
    this.#scheduled = true;
    setImmediate(() => {
      this.#scheduled = false;
      this.#start();
    });
  }

  #start(): void {
    if (this.#running !== undefined) return;
    this.#running = this.#loop().finally(() => {
      this.#running = undefined;
      // Work that arrived while the loop was finishing.
      if (this.#error === undefined && (this.#pending.length > 0 || this.#rotateWaiters.length > 0)) {
        this.#start();
      }
    });
  }

  async #loop(): Promise<void> {
    try {
      let wrote = false;
      for (;;) {
        if (this.#pending.length > 0 && wrote) {
          // Records that arrived during the last write: first let the requests that write just
          // released reply (their continuations are queued; a lone write below would block the
          // event loop for a whole sync before they run), and let requests already read from
          // sockets append, so they join this batch instead of the next.
          await new Promise<void>((resolve) => setImmediate(resolve));
        }
        if (this.#pending.length > 0) {
          wrote = true;
          const lone = this.#pending.length === 1;
          const records = this.#pending.length;
          const batch = lone ? (this.#pending[0] as Buffer) : Buffer.concat(this.#pending);
          this.#pending = [];
          const seq = this.#appended;
          if (this.#offset + batch.length > this.#allocated) await this.#extend(batch.length);
          const at = this.#offset;
          const t0 = this.onSync === undefined ? 0 : performance.now();
          let off = 0;
          if (lone && DSYNC) {
            // A lone writer: one synchronous O_DSYNC write is cheaper than a trip through the
            // thread pool (about a quarter less CPU and latency per put, measured). Batches of
            // several records come from concurrent writers; those stay asynchronous so that the
            // event loop keeps taking requests, which join the next batch.
            while (off < batch.length) {
              off += writeSync(this.#fh.fd, batch, off, batch.length - off, at + off);
            }
          } else {
            while (off < batch.length) {
              const { bytesWritten } = await this.#fh.write(batch, off, batch.length - off, at + off);
              off += bytesWritten;
            }
            if (!DSYNC) await this.#fh.datasync();
          }
          this.#offset = at + batch.length;
          this.#synced = seq;
          this.onSync?.({ seconds: (performance.now() - t0) / 1000, records, bytes: batch.length });
          this.#release();
          continue;
        }
        if (this.#rotateWaiters.length > 0) {
          const waiters = this.#rotateWaiters;
          this.#rotateWaiters = [];
          const next = this.#segment + 1;
          const fh = await createSegment(this.#dir, next);
          await this.#fh.close();
          this.#fh = fh;
          this.#segment = next;
          this.#offset = WAL_MAGIC.length;
          this.#allocated = SEGMENT_PREALLOCATE_BYTES;
          this.recordsInSegment = 0;
          this.bytesInSegment = 0;
          for (const w of waiters) w.resolve(next);
          continue;
        }
        return;
      }
    } catch (err) {
      this.#error = new MusterError('MUSTER_INTERNAL', `writing the write-ahead log in ${this.#dir} failed`, {
        cause: err,
      });
      for (const w of this.#waiters) w.reject(this.#error);
      for (const w of this.#rotateWaiters) w.reject(this.#error);
      this.#waiters = [];
      this.#rotateWaiters = [];
    }
  }

  /** Grows the segment with synced zeros so that `need` more bytes fit after the write position. */
  async #extend(need: number): Promise<void> {
    const size =
      Math.ceil((this.#offset + need) / SEGMENT_PREALLOCATE_BYTES) * SEGMENT_PREALLOCATE_BYTES +
      SEGMENT_PREALLOCATE_BYTES;
    await writeZeros(this.#fh, this.#allocated, size);
    // O_DSYNC writes are durable with the new size; otherwise one fdatasync covers both.
    if (!DSYNC) await this.#fh.datasync();
    this.#allocated = size;
  }

  #release(): void {
    if (this.#waiters.length === 0) return;
    const still: Waiter[] = [];
    for (const w of this.#waiters) {
      if (w.seq <= this.#synced) w.resolve();
      else still.push(w);
    }
    this.#waiters = still;
  }
}

/**
 * Segments are opened with O_DSYNC where the platform has it: each write returns once its data is
 * on disk, one system call instead of a write and an fdatasync. Elsewhere the log calls fdatasync.
 * Writes are positional (no O_APPEND): records overwrite the preallocated zeros.
 */
const DSYNC = typeof constants.O_DSYNC === 'number' && process.platform === 'linux';
const RECORD_FLAGS = constants.O_WRONLY | (DSYNC ? constants.O_DSYNC : 0);

/** Writes zeros over `[from, to)` of the file (the caller syncs). */
async function writeZeros(fh: FileHandle, from: number, to: number): Promise<void> {
  zeros ??= Buffer.alloc(SEGMENT_PREALLOCATE_BYTES);
  for (let at = from; at < to;) {
    const { bytesWritten } = await fh.write(zeros, 0, Math.min(zeros.length, to - at), at);
    at += bytesWritten;
  }
}

/** Suffix of a segment (or other data file) while it is being created; start-up removes leftovers. */
export const TEMP_SUFFIX = '.tmp';

/**
 * Creates segment `n` durably and returns it opened for records: the file is built under a
 * temporary name (`wal-<n>.log.tmp`) with its magic and {@link SEGMENT_PREALLOCATE_BYTES} of zeros,
 * fsynced, renamed to `wal-<n>.log`, and the directory fsynced (etcd's `file_pipeline.go` does the
 * same). So a segment that has its name is complete and synced: a crash at any step leaves either
 * no `wal-<n>.log` at all (only a temporary file, which start-up removes) or a whole, empty
 * segment. (Creating the final name first and writing the header after, as earlier versions did,
 * left a 0-byte segment when the process died in between; see {@link readSegment} for how such
 * leftovers are read.)
 *
 * Throws `MUSTER_INTERNAL` if `wal-<n>.log` already exists (the log never replaces a segment).
 */
async function createSegment(dir: string, n: number): Promise<FileHandle> {
  const path = join(dir, segmentName(n));
  const tmp = `${path}${TEMP_SUFFIX}`;
  // Filled through a descriptor without O_DSYNC (one sync at the end, not one per write). O_TRUNC:
  // a temporary file left by a crash is rebuilt from nothing.
  const init = await open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC, 0o644);
  try {
    crashPoint('wal.segment.created');
    await init.write(WAL_MAGIC, 0, WAL_MAGIC.length, 0);
    crashPoint('wal.segment.header-written');
    await writeZeros(init, WAL_MAGIC.length, SEGMENT_PREALLOCATE_BYTES);
    await init.sync();
    crashPoint('wal.segment.synced');
  } finally {
    await init.close();
  }
  // rename() would silently replace an existing segment; the data directory is locked, so checking
  // first keeps the guarantee O_EXCL gave.
  if (await exists(path)) {
    await rm(tmp, { force: true });
    throw new MusterError('MUSTER_INTERNAL', `the write-ahead log segment ${path} already exists`, {
      details: { file: path },
    });
  }
  await rename(tmp, path);
  crashPoint('wal.segment.renamed');
  syncDir(dir);
  return open(path, RECORD_FLAGS);
}

function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}
