/**
 * What was started, on disk: one small JSON file per live process group in a state directory, so a
 * restarted parent (after a crash the guard did not clean up: the guard was killed too, or the machine
 * ran without setpriv and the guard lost a race) can find and kill what it left behind.
 *
 * A record is written atomically (temporary file + rename) before the child runs its command, and
 * removed once the whole group is gone. No fsync: the record only has to survive the parent process,
 * not the machine — a machine crash takes the children with it.
 */
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { invalidArgument } from '../errors.js';
import { findMarked, readStat, selfIdentity, signalGroup, waitGroupGone } from './group.js';

/** One started process group. */
export interface ProcessRecord {
  readonly pid: number;
  readonly pgid: number;
  /** Field 22 of `/proc/<pid>/stat`; a pid whose start time differs is another process. */
  readonly startTime: string;
  readonly label: string;
  readonly command: readonly string[];
  /** Wall clock, ms. */
  readonly startedAt: number;
  /** The process that started it: a record whose owner is still alive is its business, not ours. */
  readonly owner: { readonly pid: number; readonly startTime: string };
}

/** What {@link ProcessRegistry.sweep} did. */
export interface SweepReport {
  /** Groups killed: their leader was alive with the recorded start time. */
  readonly killed: number;
  /** Records removed without killing: the leader is gone or its pid now names another process. */
  readonly stale: number;
  /** Records left alone: their owner is still alive (another live parent uses this directory). */
  readonly skipped: number;
  /**
   * Processes killed outside any recorded live group: they carry the `MUSTER_PROCESS` marker of a
   * dead owner found in a record (group members whose leader died, descendants that left the group).
   */
  readonly strays: number;
  /** The records killed, for the log. */
  readonly killedRecords: readonly ProcessRecord[];
}

/** 5 s: the most a sweep waits for a SIGKILLed group to disappear before it reports it anyway. */
export const SWEEP_WAIT_MS = 5000;

export class ProcessRegistry {
  readonly dir: string;

  /** `dir` is created if missing. */
  constructor(dir: string) {
    if (typeof dir !== 'string' || dir === '')
      throw invalidArgument('ProcessRegistry needs a directory path, e.g. /var/lib/muster/processes');
    this.dir = dir;
    mkdirSync(dir, { recursive: true });
  }

  /** Records a group (called by the kernel before the child runs its command). */
  add(record: Omit<ProcessRecord, 'owner'>): void {
    const full: ProcessRecord = { ...record, owner: selfIdentity() };
    const file = this.#file(record.pid);
    const tmp = `${file}.${process.pid}.tmp`;
    writeFileSync(tmp, JSON.stringify(full) + '\n');
    renameSync(tmp, file);
  }

  /** Removes the record of `pid` (called once its group is gone). */
  remove(pid: number): void {
    rmSync(this.#file(pid), { force: true });
  }

  /** Every record in the directory (unreadable files are skipped). */
  list(): ProcessRecord[] {
    let names: string[];
    try {
      names = readdirSync(this.dir).filter((n) => /^\d+\.json$/.test(n));
    } catch {
      return [];
    }
    const out: ProcessRecord[] = [];
    for (const name of names) {
      try {
        const r = JSON.parse(readFileSync(join(this.dir, name), 'utf8')) as ProcessRecord;
        if (Number.isInteger(r.pid) && Number.isInteger(r.pgid) && typeof r.startTime === 'string')
          out.push(r);
      } catch {
        // half-written by a foreign tool, or removed meanwhile
      }
    }
    return out;
  }

  /**
   * Kills what a previous parent left: for each record whose owner is gone, SIGKILLs the group if its
   * leader is alive with the recorded start time (pid-reuse safe), waits for the group to go, and
   * removes the record; a record whose leader is gone or whose pid now names another process is only
   * removed. Records of a live owner are left alone. Last, every process still carrying the
   * `MUSTER_PROCESS` marker of a dead owner (a member of a group whose leader is gone, a descendant that
   * left its group) is SIGKILLed and counted in `strays`.
   */
  async sweep(): Promise<SweepReport> {
    let killed = 0;
    let stale = 0;
    let skipped = 0;
    const killedRecords: ProcessRecord[] = [];
    const me = selfIdentity();
    const deadOwners = new Set<string>();
    for (const r of this.list()) {
      const ownerAlive =
        r.owner !== undefined &&
        !(r.owner.pid === me.pid && r.owner.startTime === me.startTime) &&
        isSameProcess(r.owner.pid, r.owner.startTime);
      const mine = r.owner?.pid === me.pid && r.owner.startTime === me.startTime;
      if (ownerAlive || mine) {
        skipped++;
        continue;
      }
      if (r.owner !== undefined) deadOwners.add(`${r.owner.pid}.${r.owner.startTime}`);
      if (r.startTime !== '' && isSameProcess(r.pid, r.startTime) && r.pgid > 1) {
        try {
          signalGroup(r.pgid, 'SIGKILL');
          process.kill(r.pid, 'SIGKILL');
        } catch {
          // gone meanwhile
        }
        const until = performance.now() + SWEEP_WAIT_MS;
        await waitGroupGone(r.pgid, () => until);
        killed++;
        killedRecords.push(r);
      } else {
        stale++;
      }
      this.remove(r.pid);
    }
    // The marker names its parent by pid and start time, so it never matches another parent's child.
    let strays = 0;
    for (const owner of deadOwners) {
      for (const pid of await findMarked(`${owner}/`, true)) {
        try {
          process.kill(pid, 'SIGKILL');
          strays++;
        } catch {
          // gone meanwhile
        }
      }
    }
    return { killed, stale, skipped, strays, killedRecords };
  }

  #file(pid: number): string {
    return join(this.dir, `${pid}.json`);
  }
}

/** Alive (not a zombie) with this start time. */
function isSameProcess(pid: number, startTime: string): boolean {
  const stat = readStat(pid);
  return stat !== undefined && stat.state !== 'Z' && stat.startTime === startTime;
}
