/**
 * Process groups and `/proc`: signal a whole group, tell whether it is gone, read a process's start
 * time. Linux-first; elsewhere the `/proc` readers return `undefined` and only `kill(-pgid, 0)` decides.
 */
import { closeSync, openSync, readdirSync, readFileSync, readSync } from 'node:fs';

/**
 * Field 22 of `/proc/<pid>/stat` (start time in clock ticks since boot), or `undefined` when the
 * process does not exist. With the pid it names one process for ever: a reused pid has a later start.
 */
export function readStartTime(pid: number): string | undefined {
  return readStat(pid)?.startTime;
}

let self: { readonly pid: number; readonly startTime: string } | undefined;
/** This process's pid and start time (its identity in registry records and in the marker). */
export function selfIdentity(): { readonly pid: number; readonly startTime: string } {
  self ??= { pid: process.pid, startTime: readStartTime(process.pid) ?? '' };
  return self;
}

/** The fields of `/proc/<pid>/stat` muster reads. */
export interface ProcStat {
  readonly pid: number;
  /** `R`, `S`, `D`, `Z` (zombie: dead, waiting to be reaped), `T`… */
  readonly state: string;
  readonly ppid: number;
  readonly pgid: number;
  readonly startTime: string;
}

/** Parses `/proc/<pid>/stat`; `undefined` when the process is gone (or there is no `/proc`). */
export function readStat(pid: number): ProcStat | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // The command name (field 2) is in parentheses and may itself hold spaces or ')'.
  const close = text.lastIndexOf(')');
  if (close < 0) return undefined;
  const rest = text.slice(close + 2).split(' ');
  // rest[0] is field 3 (state); field n is rest[n - 3].
  const state = rest[0];
  const startTime = rest[19];
  if (state === undefined || startTime === undefined) return undefined;
  return { pid, state, ppid: Number(rest[1]), pgid: Number(rest[2]), startTime };
}

/** True when `pid` names a process that is alive (a zombie is dead) and, if given, started at `startTime`. */
export function isAlive(pid: number, startTime?: string): boolean {
  const stat = readStat(pid);
  if (stat === undefined) return hasProc() ? false : signalZero(pid);
  return stat.state !== 'Z' && (startTime === undefined || stat.startTime === startTime);
}

let procAvailable: boolean | undefined;
function hasProc(): boolean {
  if (procAvailable === undefined) {
    try {
      readFileSync('/proc/self/stat', 'utf8');
      procAvailable = true;
    } catch {
      procAvailable = false;
    }
  }
  return procAvailable;
}

function signalZero(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Sends `signal` to every process in group `pgid`. Returns false when the group no longer exists
 * (ESRCH); other errors (EPERM: a member changed user) are thrown.
 */
export function signalGroup(pgid: number, signal: NodeJS.Signals | 0): boolean {
  if (!Number.isInteger(pgid) || pgid <= 1) throw new RangeError(`not a process group id: ${pgid}`);
  try {
    process.kill(-pgid, signal);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return false;
    throw err;
  }
}

/** Every live (non-zombie) process whose process group is `pgid`, from a scan of `/proc`. */
export function liveMembers(pgid: number): number[] {
  let pids: string[];
  try {
    pids = readdirSync('/proc').filter((p) => p.charCodeAt(0) >= 48 && p.charCodeAt(0) <= 57);
  } catch {
    return [];
  }
  const out: number[] = [];
  for (const p of pids) {
    const stat = readStat(Number(p));
    if (stat !== undefined && stat.pgid === pgid && stat.state !== 'Z') out.push(stat.pid);
  }
  return out;
}

/**
 * True when group `pgid` has no live member. `kill(-pgid, 0)` answers ESRCH once every member is
 * reaped; members that are already zombies (dead, but their new parent — init — has not reaped them
 * yet) still count for the kernel, so when the cheap test says "exists" and `scan` is set, the group's
 * members are read from `/proc` and zombies are ignored.
 */
export function groupGone(pgid: number, scan: boolean): boolean {
  try {
    if (!signalGroup(pgid, 0)) return true;
  } catch {
    // EPERM: the members left are another user's; only /proc can tell whether they are dead
  }
  return scan && hasProc() && liveMembers(pgid).length === 0;
}

/** Poll delays after a signal: 1, 2, 4 … ms, capped (a group dies in a few ms after SIGKILL). */
export const GROUP_POLL_MAX_MS = 50;
/** The first `/proc` scan for zombie-only groups happens this long after waiting starts. */
export const ZOMBIE_SCAN_AFTER_MS = 20;
/** …and then at most this often (a scan reads every `/proc/<pid>/stat`). */
export const ZOMBIE_SCAN_EVERY_MS = 200;

/**
 * Resolves `true` once group `pgid` is gone (see {@link groupGone}), or `false` once `deadline()` (a
 * `performance.now()` instant, read at every poll so a caller can move it) passes first. Polls with growing delays on ref'd timers, so a process
 * waiting for its children stays alive until they are gone; `wake` settling polls at once.
 */
export async function waitGroupGone(
  pgid: number,
  deadline: () => number = () => Infinity,
  extra: () => boolean = () => true,
  wake?: Promise<unknown>,
): Promise<boolean> {
  // `wake` (the leader's exit, say) cuts the current poll delay short: the usual stop — the leader
  // exits on the signal and is the group's last member — is seen at its exit event, not at the next
  // doubling poll (up to twice the time the child took to die).
  let woken = false;
  let wakeUp: (() => void) | undefined;
  void wake?.then(() => {
    woken = true;
    wakeUp?.();
  });
  const started = performance.now();
  let lastScan = -Infinity;
  let delay = 1;
  for (;;) {
    const now = performance.now();
    // Nothing is decided before `extra()` holds (the caller has seen the leader's exit), so no
    // `/proc` scan runs before it: on a loaded host a stop outlasted 20 ms often, and the scans it
    // started then (every process's stat) were a sixth of an agent's CPU during hand-offs.
    const ready = extra();
    const scan = ready && now - started >= ZOMBIE_SCAN_AFTER_MS && now - lastScan >= ZOMBIE_SCAN_EVERY_MS;
    if (scan) lastScan = now;
    if (ready && groupGone(pgid, scan)) return true;
    const until = deadline();
    if (now >= until) return false;
    await new Promise<void>((resolve) => {
      const t = setTimeout(done, Math.min(delay, Math.max(0, until - now)));
      function done(): void {
        clearTimeout(t);
        wakeUp = undefined;
        resolve();
      }
      if (!woken) wakeUp = done;
    });
    if (woken && delay > 1) {
      woken = false;
      delay = 1; // after the wake-up, poll from 1 ms again for members the leader left behind
    } else {
      delay = Math.min(delay * 2, GROUP_POLL_MAX_MS);
    }
  }
}

/** The environment variable that marks every process the kernel starts (and, by inheritance, theirs). */
export const MARKER_VARIABLE = 'MUSTER_PROCESS';

/** `/proc/<pid>/environ` files read between two yields to the event loop (~15 µs each). */
export const SCAN_BATCH = 128;

/**
 * Live processes whose initial environment holds `MUSTER_PROCESS=<value>` (exactly, or starting with
 * `value` when `prefix`). This finds descendants that left their process group (setsid, setpgid) as
 * long as they kept the variable; reading `/proc/<pid>/environ` needs the same user (or root). Reads
 * in batches of {@link SCAN_BATCH} and yields between them, so a host with thousands of processes
 * does not stall this process's event loop (a lease renewal, say) for the whole scan.
 */
export async function findMarked(value: string, prefix = false): Promise<number[]> {
  let pids: string[];
  try {
    pids = readdirSync('/proc').filter((p) => p.charCodeAt(0) >= 48 && p.charCodeAt(0) <= 57);
  } catch {
    return [];
  }
  const needle = Buffer.from(`${MARKER_VARIABLE}=${value}${prefix ? '' : '\0'}`);
  const out: number[] = [];
  for (let i = 0; i < pids.length; i++) {
    if (i > 0 && i % SCAN_BATCH === 0) await new Promise((resolve) => setImmediate(resolve));
    const pid = Number(pids[i]);
    if (pid !== process.pid && hasMarker(pid, needle)) out.push(pid);
  }
  return out;
}

/**
 * Live processes whose `MUSTER_PROCESS` starts with `prefix`, grouped by the variable's whole value:
 * one pass over `/proc` answers for every child of a parent (whose markers share its token as prefix).
 */
export async function findMarkers(prefix: string): Promise<Map<string, number[]>> {
  let pids: string[];
  const out = new Map<string, number[]>();
  try {
    pids = readdirSync('/proc').filter((p) => p.charCodeAt(0) >= 48 && p.charCodeAt(0) <= 57);
  } catch {
    return out;
  }
  const needle = Buffer.from(`${MARKER_VARIABLE}=${prefix}`);
  const head = MARKER_VARIABLE.length + 1;
  for (let i = 0; i < pids.length; i++) {
    if (i > 0 && i % SCAN_BATCH === 0) await new Promise((resolve) => setImmediate(resolve));
    const pid = Number(pids[i]);
    if (pid === process.pid) continue;
    const value = markerOf(pid, needle, head);
    if (value === undefined) continue;
    const list = out.get(value);
    if (list === undefined) out.set(value, [pid]);
    else list.push(pid);
  }
  return out;
}

/** One buffer for every `environ` read of a scan (they are synchronous, so never concurrent). */
let environBuffer: Buffer | undefined;
const ENVIRON_BUFFER_BYTES = 64 * 1024;

/**
 * `/proc/<pid>/environ`, or `undefined` (gone, a zombie, another user's). The bytes are read into
 * one reused buffer and valid until the next call: `readFileSync` costs an `fstat`, two fresh 64 KiB
 * buffers (a `/proc` file reports size 0) and a copy per process, which made a scan twice as
 * expensive and its garbage a burden of its own. An environment larger than the buffer (rare) is
 * read whole.
 */
function readEnviron(pid: number): Buffer | undefined {
  const path = `/proc/${pid}/environ`;
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch {
    return undefined;
  }
  try {
    environBuffer ??= Buffer.allocUnsafe(ENVIRON_BUFFER_BYTES);
    const n = readSync(fd, environBuffer, 0, ENVIRON_BUFFER_BYTES, null);
    if (n < ENVIRON_BUFFER_BYTES) return environBuffer.subarray(0, n);
    return readFileSync(path);
  } catch {
    return undefined;
  } finally {
    closeSync(fd);
  }
}

function markerOf(pid: number, needle: Buffer, head: number): string | undefined {
  const env = readEnviron(pid);
  if (env === undefined) return undefined;
  for (let i = env.indexOf(needle); i >= 0; i = env.indexOf(needle, i + 1)) {
    if (i === 0 || env[i - 1] === 0) {
      const end = env.indexOf(0, i);
      const value = env.toString('latin1', i + head, end < 0 ? env.length : end);
      return readStat(pid)?.state === 'Z' ? undefined : value;
    }
  }
  return undefined;
}

let queuedScan: Promise<Map<string, number[]>> | undefined;
let queuedPrefix = '';
let runningScan: Promise<unknown> = Promise.resolve();

/**
 * {@link findMarkers} shared by every caller of this process: a call is answered by a scan that
 * starts after it (so it sees every process that existed when it was made), and every call made
 * while that scan waits for the running one shares it. When an agent stops all its children at once,
 * one or two passes over `/proc` serve them all, instead of two per child.
 */
export function findMarkersShared(prefix: string): Promise<Map<string, number[]>> {
  if (queuedScan !== undefined && queuedPrefix === prefix) return queuedScan;
  // One turn after the running scan: the requests of every child stopped in the same turn (an
  // agent's leave SIGKILLs all its children in one) share the scan.
  const scan = runningScan
    .then(() => new Promise<void>((resolve) => setImmediate(resolve)))
    .then(() => {
      if (queuedScan === scan) queuedScan = undefined;
      const running = findMarkers(prefix);
      runningScan = running.catch(() => undefined);
      return running;
    });
  queuedScan = scan;
  queuedPrefix = prefix;
  return scan;
}

function hasMarker(pid: number, needle: Buffer): boolean {
  const env = readEnviron(pid); // undefined: gone, a zombie, or another user's
  if (env === undefined) return false;
  for (let i = env.indexOf(needle); i >= 0; i = env.indexOf(needle, i + 1)) {
    if (i === 0 || env[i - 1] === 0) return readStat(pid)?.state !== 'Z';
  }
  return false;
}
