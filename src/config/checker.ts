/**
 * The checker for invariant 1 over a recorded history: every task that ran used exactly the version
 * in force at its start time, according to the final, authoritative timeline. Refused tasks are
 * counted, never judged (refusing is always allowed).
 */
import type { ConfigVersion } from './model.js';
import { Timeline } from './timeline.js';

/** One task as a worker recorded it. */
export interface TaskRecord {
  readonly worker: string;
  /** Wall-clock start time the task asked the configuration for. */
  readonly startedAt: number;
  /** The version it ran with, or `null` when it was refused (stale or missing configuration). */
  readonly version: number | null;
}

export interface VersionViolation {
  readonly task: TaskRecord;
  /** The version in force at `task.startedAt` (undefined: none). */
  readonly expected: number | undefined;
}

export interface HistoryReport {
  readonly tasks: number;
  readonly ran: number;
  readonly refused: number;
  readonly violations: readonly VersionViolation[];
}

/** Checks `tasks` against `versions` (the store's final record; cancelled versions are ignored). */
export function checkVersionHistory(
  tasks: Iterable<TaskRecord>,
  versions: readonly ConfigVersion[],
): HistoryReport {
  const timeline = new Timeline(versions.filter((v) => v.cancelledAt === undefined));
  let n = 0;
  let refused = 0;
  const violations: VersionViolation[] = [];
  for (const task of tasks) {
    n++;
    if (task.version === null) {
      refused++;
      continue;
    }
    const expected = timeline.at(task.startedAt)?.version;
    if (expected !== task.version) violations.push({ task, expected });
  }
  return { tasks: n, ran: n - refused, refused, violations };
}
