/**
 * Snapshots of `muster serve`: the whole engine state at one revision, so that start-up reads one
 * file instead of the whole history, and old log segments can be deleted.
 *
 * A snapshot file `snap-<revision>.snap` is `magic | u32 CRC32(body) | body`. It is written to a
 * temporary name, fsynced, renamed into place and the directory fsynced: a crash leaves either the
 * old snapshot or the new one, never half of one. The body names the first log segment that
 * follows it; start-up replays that segment and the later ones.
 */
import { readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { closeSync, fsyncSync, openSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { MusterError } from '../errors.js';
import type { EngineSnapshot } from '../store/index.js';
import { crc32, decodeSnapshot, encodeSnapshot } from './codec.js';
import { crashPoint } from './crash-point.js';
import { syncDir } from './wal.js';

/** Magic at the start of every snapshot; the trailing digit is the format version. */
export const SNAPSHOT_MAGIC = Buffer.from('MSTRSNP1', 'latin1');

/** The file name of the snapshot at `revision`. */
export function snapshotName(revision: number): string {
  return `snap-${String(revision).padStart(16, '0')}.snap`;
}

/** Parses a snapshot file name; `undefined` for other files. */
export function snapshotRevision(name: string): number | undefined {
  const m = /^snap-(\d{16})\.snap$/.exec(name);
  return m === null ? undefined : Number(m[1]);
}

/** Writes a snapshot durably (temp file, fsync, rename, directory fsync); returns its file name. */
export async function writeSnapshot(
  dir: string,
  snapshot: EngineSnapshot,
  firstSegment: number,
): Promise<string> {
  const name = snapshotName(snapshot.revision);
  const tmp = join(dir, `${name}.tmp`);
  await writeFile(tmp, snapshotFileBytes(snapshot, firstSegment));
  crashPoint('snapshot.tmp-written');
  const fd = openSync(tmp, 'r+');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  crashPoint('snapshot.tmp-synced');
  // Replaces a snapshot of the same revision atomically (a clean stop with no write since the last
  // snapshot writes one that names a later first segment).
  await rename(tmp, join(dir, name));
  crashPoint('snapshot.renamed');
  syncDir(dir);
  return name;
}

/**
 * Reads the newest snapshot in `dir`, if any. Throws `MUSTER_CORRUPT_DATA` when it fails its check
 * (snapshots are renamed into place only when complete, so a bad one is real corruption).
 */
/** etcd's snapshot stream: bbolt pages (a multiple of 512 bytes) followed by their SHA-256. */
const ETCD_PAGE = 512;
const SHA256_BYTES = 32;

/**
 * A snapshot file's bytes: magic, CRC32 of the body, body. With `etcdFraming` (the Snapshot RPC),
 * the body is zero-padded to a multiple of 512 bytes and the SHA-256 of everything is appended, as
 * etcd frames its database: `etcdctl snapshot save` checks that trailer. The decoder ignores the
 * padding; {@link parseSnapshotFile} checks and strips the trailer.
 */
export function snapshotFileBytes(
  snapshot: EngineSnapshot,
  firstSegment: number,
  options: { etcdFraming?: boolean } = {},
): Buffer {
  let body = encodeSnapshot(snapshot, firstSegment);
  const headLength = SNAPSHOT_MAGIC.length + 4;
  if (options.etcdFraming === true) {
    const pad = (ETCD_PAGE - ((headLength + body.length) % ETCD_PAGE)) % ETCD_PAGE;
    body = Buffer.concat([body, Buffer.alloc(pad)]);
  }
  const head = Buffer.allocUnsafe(headLength);
  SNAPSHOT_MAGIC.copy(head, 0);
  head.writeUInt32LE(crc32(body), SNAPSHOT_MAGIC.length);
  const file = Buffer.concat([head, body]);
  if (options.etcdFraming !== true) return file;
  return Buffer.concat([file, createHash('sha256').update(file).digest()]);
}

/**
 * Checks and decodes a snapshot file's bytes. Throws `MUSTER_CORRUPT_DATA` naming `file` when its
 * magic or checksum is wrong or it cannot be decoded.
 */
export function parseSnapshotFile(
  input: Buffer,
  file: string,
): { snapshot: EngineSnapshot; firstSegment: number } {
  let buf = input;
  if (buf.length % ETCD_PAGE === SHA256_BYTES) {
    const data = buf.subarray(0, buf.length - SHA256_BYTES);
    if (createHash('sha256').update(data).digest().equals(buf.subarray(data.length))) buf = data;
  }
  const bodyAt = SNAPSHOT_MAGIC.length + 4;
  if (
    buf.length < bodyAt ||
    !buf.subarray(0, SNAPSHOT_MAGIC.length).equals(SNAPSHOT_MAGIC) ||
    crc32(buf.subarray(bodyAt)) !== buf.readUInt32LE(SNAPSHOT_MAGIC.length)
  ) {
    throw new MusterError(
      'MUSTER_CORRUPT_DATA',
      `the snapshot ${file} failed its integrity check (not a muster snapshot, or damaged)`,
      { details: { file } },
    );
  }
  try {
    return decodeSnapshot(buf, bodyAt);
  } catch (err) {
    throw new MusterError('MUSTER_CORRUPT_DATA', `the snapshot ${file} could not be decoded`, {
      cause: err,
      details: { file },
    });
  }
}

export async function readNewestSnapshot(
  dir: string,
): Promise<{ snapshot: EngineSnapshot; firstSegment: number; file: string } | undefined> {
  const names = (await readdir(dir))
    .filter((n) => snapshotRevision(n) !== undefined)
    .sort()
    .reverse();
  const name = names[0];
  if (name === undefined) return undefined;
  const file = join(dir, name);
  const buf = await readFile(file);
  const bodyAt = SNAPSHOT_MAGIC.length + 4;
  if (
    buf.length < bodyAt ||
    !buf.subarray(0, SNAPSHOT_MAGIC.length).equals(SNAPSHOT_MAGIC) ||
    crc32(buf.subarray(bodyAt)) !== buf.readUInt32LE(SNAPSHOT_MAGIC.length)
  ) {
    throw new MusterError(
      'MUSTER_CORRUPT_DATA',
      `the snapshot ${file} failed its integrity check; restore the data directory from a backup`,
      { details: { file } },
    );
  }
  try {
    return { ...decodeSnapshot(buf, bodyAt), file };
  } catch (err) {
    throw new MusterError('MUSTER_CORRUPT_DATA', `the snapshot ${file} could not be decoded`, {
      cause: err,
      details: { file },
    });
  }
}

/** Deletes snapshots other than `keep`, and leftover temporary files. */
export async function removeOtherSnapshots(dir: string, keep: string): Promise<void> {
  for (const n of await readdir(dir)) {
    if (n === keep) continue;
    if (snapshotRevision(n) !== undefined || /^snap-\d{16}\.snap\.tmp$/.test(n)) {
      await rm(join(dir, n), { force: true });
    }
  }
}
