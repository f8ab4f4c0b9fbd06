/**
 * Fault injection for crash tests of `muster serve`'s durable path: `MUSTER_CRASH_AT=<point>[:<nth>]`
 * makes the process kill itself with SIGKILL the `nth` time (default 1) it reaches the named point,
 * so a test can stop the server between two exact steps (say, after a segment file is created and
 * before its header is written) and check what the next start makes of it. docs/serve.md
 * ("Crash points") lists every point, what a crash there leaves and which test covers it.
 *
 * The variable is read once, when this module loads. Unset (production), {@link crashPoint} is one
 * boolean check; the points sit on the rare steps (segment creation, snapshots, recovery), never
 * on the per-record path.
 */
import { writeSync } from 'node:fs';
import { invalidArgument } from '../errors.js';

/** Every crash point, in the order the durable path reaches them. */
export const CRASH_POINTS = [
  /** `LOCK` written (before anything else in the data directory is touched). */
  'lock.written',
  /** `member-id.tmp` written, before its fsync and rename (first start only). */
  'member-id.tmp-written',
  /** `member-id` renamed into place, before the directory fsync. */
  'member-id.renamed',
  /** A blank newest segment (left by an older version) removed, before the directory fsync. */
  'wal.blank-removed',
  /** The newest segment's torn tail truncated, before the file's fsync. */
  'wal.truncated',
  /** A new segment's temporary file created, nothing written in it yet. */
  'wal.segment.created',
  /** Its 8-byte magic written, before the preallocated zeros and the fsync. */
  'wal.segment.header-written',
  /** Magic and zeros written and fsynced, before the rename. */
  'wal.segment.synced',
  /** Renamed to `wal-<n>.log`, before the directory fsync. */
  'wal.segment.renamed',
  /** A snapshot's temporary file written, before its fsync. */
  'snapshot.tmp-written',
  /** The temporary file fsynced, before the rename. */
  'snapshot.tmp-synced',
  /** Renamed to `snap-<rev>.snap`, before the directory fsync. */
  'snapshot.renamed',
  /** Older snapshots removed, before the segments the snapshot covers are. */
  'snapshot.old-removed',
  /** One segment the snapshot covers removed (`:<nth>` picks which removal). */
  'wal.segment.removed',
  /** `alarms.json.tmp` written and fsynced, before the rename (an alarm raised or disarmed). */
  'alarms.tmp-synced',
  /** `alarms.json` renamed into place, before the directory fsync. */
  'alarms.renamed',
  /** `auth.json.tmp` written and fsynced, before the rename (a user, role or permission change). */
  'auth.tmp-synced',
  /** `auth.json` renamed into place, before the directory fsync. */
  'auth.renamed',
] as const;

export type CrashPointName = (typeof CRASH_POINTS)[number];

const spec = process.env.MUSTER_CRASH_AT;
/** True only when `MUSTER_CRASH_AT` is set: the one check every point makes. */
const armed = spec !== undefined && spec !== '';
const [target, nthText] = armed ? spec.split(':') : [];
const nth = nthText === undefined ? 1 : Number(nthText);
let reached = 0;

/**
 * Throws `MUSTER_INVALID_ARGUMENT` when `MUSTER_CRASH_AT` names no crash point (so that a typo
 * fails the test that set it instead of passing without a crash). Called once at start-up.
 */
export function checkCrashPointSetting(): void {
  if (!armed) return;
  if (!(CRASH_POINTS as readonly string[]).includes(target ?? '') || !Number.isInteger(nth) || nth < 1) {
    throw invalidArgument(
      `MUSTER_CRASH_AT must be <point>[:<nth>] with one of ${CRASH_POINTS.join(', ')} and nth ≥ 1, got '${spec}'`,
    );
  }
}

/** Kills this process with SIGKILL here when `MUSTER_CRASH_AT` names this point and this is the nth time. */
export function crashPoint(name: CrashPointName): void {
  if (!armed) return;
  if (name !== target || ++reached !== nth) return;
  // Written synchronously so that the test sees why the process died.
  writeSync(2, `muster: crash point ${name}:${nth} reached (MUSTER_CRASH_AT), killing the process\n`);
  // SIGKILL to oneself is delivered before kill() returns: nothing after this line runs.
  process.kill(process.pid, 'SIGKILL');
}
