/**
 * The memory engine made durable: recovery from the newest snapshot plus the log segments after
 * it, a write-ahead log as the engine's journal, and periodic snapshots that bound the log.
 *
 * Data directory layout: `LOCK` (pid and start time of the server using it), `member-id`, `snap-<rev>.snap`
 * (the newest snapshot), `wal-<n>.log` (the segments from the snapshot's first segment on).
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { Logger } from 'pino';
import type { Clock } from '../clock.js';
import { MusterError } from '../errors.js';
import type { KeyLimits } from '../store/internal.js';
import type { JournalEntry } from '../store/internal.js';
import { MemoryStore } from '../store/internal.js';
import { ALARMS_FILE } from './alarms.js';
import { AUTH_FILE } from './auth-store.js';
import { decodeEntry } from './codec.js';
import { checkCrashPointSetting, crashPoint } from './crash-point.js';
import {
  parseSnapshotFile,
  readNewestSnapshot,
  removeOtherSnapshots,
  snapshotFileBytes,
  snapshotRevision,
  writeSnapshot,
} from './snapshot.js';
import {
  readSegment,
  segmentName,
  segmentNumber,
  syncDir,
  TEMP_SUFFIX,
  truncateSegment,
  Wal,
} from './wal.js';
import { isAlive, readStartTime } from '../process/index.js';

/** Snapshot after this many log records: start-up replays at most about this many. */
export const DEFAULT_SNAPSHOT_RECORDS = 20_000;
/** …or after this many log bytes, whichever comes first (bounds disk use with large values). */
export const DEFAULT_SNAPSHOT_BYTES = 64 * 1024 * 1024;

export interface DurableStoreOptions {
  /** Directory for the log and snapshots; created if missing. */
  dataDir: string;
  /** Where recovery and snapshot lines go. Default: nowhere. */
  logger?: Logger;
  /** Records between snapshots. Default {@link DEFAULT_SNAPSHOT_RECORDS}. */
  snapshotRecords?: number;
  /** Log bytes between snapshots. Default {@link DEFAULT_SNAPSHOT_BYTES}. */
  snapshotBytes?: number;
  /** Clock for lease expiry. Default: the system clock. */
  clock?: Clock;
  /** The engine's URL for logs. */
  url?: string;
  /**
   * A snapshot file (from etcd's `Snapshot` RPC, e.g. `etcdctl snapshot save`) to start from. The
   * data directory must hold no data yet. Default: none.
   */
  restore?: string;
  /** Key and value limits of the engine. Default: the Store port's (the server lifts them). */
  limits?: KeyLimits;
  /** Told after each log sync with its duration and batch size (metrics); must not throw. */
  onWalSync?: (sync: { seconds: number; records: number; bytes: number }) => void;
}

/** What recovery found, for the start-up log line and tests. */
export interface RecoveryReport {
  readonly snapshotRevision: number;
  readonly records: number;
  readonly segments: number;
  /** Bytes cut off a torn log tail (0 when the log ended cleanly). */
  readonly truncatedBytes: number;
  readonly revision: number;
  readonly ms: number;
}

/** A MemoryStore backed by a write-ahead log and snapshots. Open with {@link DurableStore.open}. */
export class DurableStore {
  readonly store: MemoryStore;
  readonly dataDir: string;
  readonly memberId: string;
  readonly recovery: RecoveryReport;
  readonly #wal: Wal;
  readonly #log: Logger | undefined;
  readonly #snapshotRecords: number;
  readonly #snapshotBytes: number;
  #snapshotting: Promise<void> | undefined;
  #closed: Promise<void> | undefined;

  private constructor(init: {
    store: MemoryStore;
    wal: Wal;
    dataDir: string;
    memberId: string;
    recovery: RecoveryReport;
    options: DurableStoreOptions;
  }) {
    this.store = init.store;
    this.#wal = init.wal;
    this.dataDir = init.dataDir;
    this.memberId = init.memberId;
    this.recovery = init.recovery;
    this.#log = init.options.logger;
    this.#snapshotRecords = init.options.snapshotRecords ?? DEFAULT_SNAPSHOT_RECORDS;
    this.#snapshotBytes = init.options.snapshotBytes ?? DEFAULT_SNAPSHOT_BYTES;
  }

  /**
   * Opens (or creates) a data directory and recovers its state.
   *
   * Throws `MUSTER_DATA_DIR_LOCKED` when another live process uses the directory, and
   * `MUSTER_CORRUPT_DATA` when a snapshot or a log record before the tail fails its check. A torn
   * tail is cut off with a warning.
   */
  static async open(options: DurableStoreOptions): Promise<DurableStore> {
    const t0 = performance.now();
    const dataDir = resolve(options.dataDir);
    const log = options.logger;
    checkCrashPointSetting();
    await mkdir(dataDir, { recursive: true });
    await lockDir(dataDir);
    try {
      await removeTemporaryFiles(dataDir, log);
      if (options.restore !== undefined) await restoreInto(dataDir, options.restore, log);
      const memberId = await readMemberId(dataDir);
      // The journal is attached after recovery: replayed entries are not journaled again.
      const late: { wal?: Wal; self?: DurableStore } = {};
      const store = new MemoryStore({
        ...(options.clock ? { clock: options.clock } : {}),
        url: options.url ?? `muster-serve:${dataDir}`,
        ...(options.limits ? { limits: options.limits } : {}),
        firstLeaseId: etcdLikeId(memberId),
        journal: {
          append: (entry: JournalEntry) => {
            late.wal?.append(entry);
            if (late.self !== undefined) late.self.#maybeSnapshot();
          },
          flush: () => (late.wal === undefined ? Promise.resolve() : late.wal.flush()),
        },
      });
      const snap = await readNewestSnapshot(dataDir);
      let firstSegment = 1;
      if (snap !== undefined) {
        store.restore(snap.snapshot);
        firstSegment = snap.firstSegment;
      }
      const segments = (await readdir(dataDir))
        .map((n) => segmentNumber(n))
        .filter((n): n is number => n !== undefined && n >= firstSegment)
        .sort((a, b) => a - b);
      const leases = new Set(store.leaseIds());
      let records = 0;
      let truncatedBytes = 0;
      let next = segments.length > 0 ? (segments[segments.length - 1] as number) + 1 : firstSegment;
      for (let i = 0; i < segments.length; i++) {
        const n = segments[i] as number;
        if (n !== firstSegment + i) {
          throw new MusterError(
            'MUSTER_CORRUPT_DATA',
            `log segment ${segmentName(firstSegment + i)} is missing from ${dataDir}; restore the data directory from a backup`,
            { details: { dataDir } },
          );
        }
        const path = join(dataDir, segmentName(n));
        const last = i === segments.length - 1;
        const read = await readSegment(path, last);
        if (read.blank && last) {
          // A newest segment that was created but never written (only an older version leaves
          // one). It holds nothing, so it is removed and its number reused: the new segment takes
          // its place. Creating the next segment after it instead would leave it between two
          // segments, where earlier versions refused it as corrupt on the following start.
          log?.warn(
            { file: path, bytes: read.fileLength },
            'removed a blank newest log segment (a crash while it was being created); its number is reused',
          );
          await rm(path);
          crashPoint('wal.blank-removed');
          syncDir(dataDir);
          next = n;
          continue;
        }
        if (read.blank) {
          // The same, before the newest segment: what earlier versions made of the case above.
          // It holds no records; the segments after it are read as usual, and the next snapshot
          // deletes it.
          log?.warn(
            { file: path, bytes: read.fileLength },
            'skipped a blank log segment before the newest (left by a crash while an older version created it; it holds no records)',
          );
          continue;
        }
        for (const payload of read.payloads) {
          replayOne(store, leases, decodeEntry(payload), snap?.snapshot.revision ?? 0);
          records++;
        }
        if (read.torn) {
          truncatedBytes = read.tornBytes;
          log?.warn(
            { file: path, offset: read.goodLength, bytes: truncatedBytes },
            'cut a torn record off the end of the write-ahead log (a write that was never acknowledged)',
          );
          // Synced before the next segment is created: once this segment is not the newest, a
          // torn tail in it would be corruption.
          await truncateSegment(path, read.goodLength);
        }
      }
      const wal = await Wal.create(dataDir, next);
      wal.onSync = options.onWalSync;
      late.wal = wal;
      const recovery: RecoveryReport = {
        snapshotRevision: snap?.snapshot.revision ?? 0,
        records,
        segments: segments.length,
        truncatedBytes,
        revision: store.revision,
        ms: Math.round(performance.now() - t0),
      };
      const self = new DurableStore({ store, wal, dataDir, memberId, recovery, options });
      late.self = self;
      // Recovery read records that a snapshot would have covered: count them toward the next one.
      wal.recordsInSegment = records;
      self.#maybeSnapshot();
      return self;
    } catch (err) {
      await unlockDir(dataDir);
      throw err;
    }
  }

  /**
   * Writes a snapshot of the current state and deletes the log segments and snapshots it makes
   * obsolete. Concurrent calls share one snapshot.
   */
  snapshot(): Promise<void> {
    this.#snapshotting ??= this.#takeSnapshot().finally(() => {
      this.#snapshotting = undefined;
    });
    return this.#snapshotting;
  }

  async #takeSnapshot(): Promise<void> {
    const t0 = performance.now();
    const first = await this.#wal.rotate();
    // Everything in older segments is durable; wait until the engine has seen it as durable too.
    await this.store.headRevision();
    const snap = this.store.snapshot();
    // A snapshot keeps no history before its revision: after a restart, reads and watches before it
    // answer "compacted" (with this revision), exactly as after an etcd compaction.
    const name = await writeSnapshot(
      this.dataDir,
      { ...snap, compactRevision: Math.max(snap.compactRevision, snap.revision) },
      first,
    );
    // The new snapshot's name is durable (writeSnapshot synced the directory) before anything it
    // replaces is removed; a crash in between leaves files that recovery ignores (older snapshots,
    // segments before the snapshot's first) and the next snapshot removes.
    await removeOtherSnapshots(this.dataDir, name);
    crashPoint('snapshot.old-removed');
    for (const n of await readdir(this.dataDir)) {
      const seg = segmentNumber(n);
      if (seg !== undefined && seg < first) {
        await rm(join(this.dataDir, n), { force: true });
        crashPoint('wal.segment.removed');
      }
    }
    syncDir(this.dataDir);
    this.#log?.info(
      { revision: snap.revision, keys: snap.kvs.length, ms: Math.round(performance.now() - t0) },
      'snapshot written',
    );
  }

  /**
   * The current state as a snapshot file (what etcd's `Snapshot` RPC streams): the same format as
   * the snapshots in the data directory, restorable with `muster serve --restore FILE`.
   */
  async exportSnapshot(): Promise<Buffer> {
    await this.store.headRevision();
    const snap = this.store.snapshot();
    return snapshotFileBytes({ ...snap, compactRevision: Math.max(snap.compactRevision, snap.revision) }, 1, {
      etcdFraming: true,
    });
  }

  #maybeSnapshot(): void {
    if (this.#snapshotting !== undefined || this.#closed !== undefined) return;
    if (this.#wal.recordsInSegment < this.#snapshotRecords && this.#wal.bytesInSegment < this.#snapshotBytes)
      return;
    this.snapshot().catch((err: unknown) => {
      this.#log?.error({ err }, 'snapshot failed; the log keeps growing until one succeeds');
    });
  }

  /** Flushes the log, writes a final snapshot (fast next start), closes the engine; idempotent. */
  close(): Promise<void> {
    this.#closed ??= this.#close();
    return this.#closed;
  }

  async #close(): Promise<void> {
    const errors: unknown[] = [];
    const step = async (fn: () => Promise<unknown>): Promise<void> => {
      try {
        await fn();
      } catch (err) {
        errors.push(err);
      }
    };
    await step(async () => this.#snapshotting);
    await step(() => this.#takeSnapshot());
    await step(() => this.store.close());
    await step(() => this.#wal.close());
    await step(() => unlockDir(this.dataDir));
    if (errors.length > 0) throw errors[0];
  }
}

/** Re-applies one log entry, skipping what the snapshot already holds. */
function replayOne(store: MemoryStore, leases: Set<string>, entry: JournalEntry, snapshotRev: number): void {
  switch (entry.type) {
    case 'write':
      if (entry.revision <= snapshotRev) return;
      break;
    case 'lease-grant':
      // The segment after a snapshot may repeat grants the snapshot holds; granting again would
      // detach the lease's keys.
      if (leases.has(entry.id)) return;
      leases.add(entry.id);
      break;
    case 'lease-end':
      leases.delete(entry.id);
      break;
    case 'compact':
      break;
  }
  store.replay(entry);
}

/**
 * Reads the member id, or creates one on the first start. Written as the other data files are
 * (temporary file, fsync, rename, directory fsync) before the server answers anyone, so the id a
 * client was ever told survives any crash: a crash before the rename leaves no `member-id` (and
 * the id was never shown), after it the whole file. (Written in place, a power loss could leave it
 * empty and the next start would pick a new id.)
 */
async function readMemberId(dir: string): Promise<string> {
  const file = join(dir, MEMBER_ID_FILE);
  try {
    const id = (await readFile(file, 'utf8')).trim();
    if (/^\d+$/.test(id)) return id;
  } catch {
    // first start
  }
  // A positive 63-bit id, as etcd's member ids are uint64 shown in hex.
  const id = (randomBytes(8).readBigUInt64BE() >> 1n).toString();
  const tmp = `${file}${TEMP_SUFFIX}`;
  const fh = await open(tmp, 'w', 0o644);
  try {
    await fh.writeFile(`${id}\n`);
    crashPoint('member-id.tmp-written');
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, file);
  crashPoint('member-id.renamed');
  syncDir(dir);
  return id;
}

const MEMBER_ID_FILE = 'member-id';

/**
 * Removes the temporary files a crash can leave (a segment, snapshot or member id being created):
 * none of them was ever renamed into place, so none holds anything recovery needs.
 */
async function removeTemporaryFiles(dir: string, log: Logger | undefined): Promise<void> {
  const names = (await readdir(dir)).filter((n) => {
    if (!n.endsWith(TEMP_SUFFIX)) return false;
    const base = n.slice(0, -TEMP_SUFFIX.length);
    return (
      base === MEMBER_ID_FILE ||
      base === ALARMS_FILE ||
      base === AUTH_FILE ||
      segmentNumber(base) !== undefined ||
      snapshotRevision(base) !== undefined
    );
  });
  for (const n of names) await rm(join(dir, n), { force: true });
  if (names.length > 0) {
    syncDir(dir);
    log?.warn({ files: names }, 'removed temporary files left by a crash');
  }
}

/**
 * Takes the data directory's `LOCK`: `<pid> <start time>` (field 22 of `/proc/<pid>/stat`, clock
 * ticks since boot). A pid alone would name another process after a reboot or pid reuse and refuse
 * to start; with the start time a lock is held only by the very process that wrote it. A lock whose
 * pid is dead, or alive with another start time, is stale and taken over. A lock written by an older
 * version holds only the pid and is judged by the pid alone.
 */
async function lockDir(dir: string): Promise<void> {
  const file = join(dir, 'LOCK');
  let text: string | undefined;
  try {
    text = await readFile(file, 'utf8');
  } catch {
    // no lock file: free
  }
  if (text !== undefined) {
    const [pidText, startTime] = text.trim().split(/\s+/);
    const pid = Number(pidText);
    if (pid === process.pid && held.has(dir)) {
      throw new MusterError(
        'MUSTER_DATA_DIR_LOCKED',
        `the data directory ${dir} is already open in this process; close the other server first`,
        { details: { dataDir: dir, pid } },
      );
    }
    if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && isAlive(pid, startTime)) {
      throw new MusterError(
        'MUSTER_DATA_DIR_LOCKED',
        `the data directory ${dir} is in use by process ${pid}; stop it or choose another --data-dir`,
        { details: { dataDir: dir, pid } },
      );
    }
  }
  // Written in place: a crash can leave it empty or stale, and both read as free (no live process).
  const startTime = readStartTime(process.pid);
  await writeFile(file, startTime === undefined ? `${process.pid}\n` : `${process.pid} ${startTime}\n`);
  held.add(dir);
  crashPoint('lock.written');
}

const held = new Set<string>();

async function unlockDir(dir: string): Promise<void> {
  if (!held.delete(dir)) return;
  await rm(join(dir, 'LOCK'), { force: true });
}

/**
 * Puts the snapshot `file` into the empty data directory `dataDir` as its first snapshot (the log
 * starts after it). Throws `MUSTER_INVALID_ARGUMENT` when the file cannot be read or the directory
 * already holds data, and `MUSTER_CORRUPT_DATA` when the file is not an intact muster snapshot.
 * The snapshot is written as every snapshot is (temporary file, fsync, rename, directory fsync): a
 * crash leaves either no snapshot (restore again) or the restored one.
 */
async function restoreInto(dataDir: string, file: string, log: Logger | undefined): Promise<void> {
  let buf: Buffer;
  try {
    buf = await readFile(file);
  } catch (err) {
    throw new MusterError(
      'MUSTER_INVALID_ARGUMENT',
      `cannot read the snapshot ${file}: ${(err as Error).message}`,
      {
        cause: err,
        details: { file },
      },
    );
  }
  const { snapshot } = parseSnapshotFile(buf, file);
  const held = (await readdir(dataDir)).filter(
    (n) => segmentNumber(n) !== undefined || snapshotRevision(n) !== undefined,
  );
  if (held.length > 0) {
    throw new MusterError(
      'MUSTER_INVALID_ARGUMENT',
      `--restore needs a new or empty data directory, and ${dataDir} already holds data (${held.slice(0, 3).join(', ')}); give another --data-dir or start without --restore`,
      { details: { dataDir, file } },
    );
  }
  await writeSnapshot(dataDir, snapshot, 1);
  log?.info(
    { file, revision: snapshot.revision, keys: snapshot.kvs.length },
    `restored the snapshot ${file}`,
  );
}

/**
 * A lease id as etcd makes them (its request-id generator): the member id's low 16 bits, then the
 * start time in milliseconds (40 bits), then a count (8 bits), kept within int64. Ids then count up
 * from it; they only have to be unique, which the log and snapshots keep them.
 */
export function etcdLikeId(memberId: string): bigint {
  const member = BigInt(memberId) & 0xffffn;
  const time = BigInt(Date.now()) & ((1n << 40n) - 1n);
  const id = ((member << 48n) | (time << 8n)) & ((1n << 63n) - 1n);
  return id === 0n ? 1n : id;
}
