/**
 * Recording who worked on which partition, and when, so a checker can judge the history afterwards
 * (as Jepsen does). Every process of a test writes events with timestamps from {@link historyNow}, a
 * clock that all processes of one machine share, to a JSON-lines file or to memory.
 */
import { appendFileSync, readFileSync } from 'node:fs';
import { hostWallMs } from '../util/host-clock.js';

/**
 * Milliseconds on a clock shared by every process of one machine ({@link hostWallMs}: the host's
 * monotonic clock plus a calibrated offset). Unlike `Date.now()` it does not jump within a process,
 * and across processes it agrees to microseconds. (`performance.timeOrigin + performance.now()`
 * does not: a process started on a busy host had its origin 141 ms off.)
 */
export function historyNow(): number {
  return hostWallMs();
}

/** {@link historyNow} time of an instant on this process's `performance.now()` clock (the system clock's monotonic). */
export function historyTimeOf(monotonic: number): number {
  return monotonic - performance.now() + hostWallMs();
}

/** Fields every ownership event has. */
interface EventBase {
  /** {@link historyNow} when it happened. */
  readonly t: number;
  /** The instance id (a restarted process may reuse it; tokens tell incarnations apart). */
  readonly instance: string;
}

/**
 * One step in the life of an ownership, in the order they happen for one (partition, token):
 * `acquire` (the owner key was created; `token` is its createRevision) → `start` (work began) →
 * `work`* (a unit of work was done, optional) → `stop` (work ended) → `release` (the key was deleted;
 * absent when the lease expired instead). `crash` is written by a test harness when it kills a process:
 * every ownership of that instance still open ends at `t`.
 */
export type OwnershipEvent =
  | (EventBase & { readonly type: 'acquire'; readonly partition: string; readonly token: number })
  | (EventBase & { readonly type: 'start'; readonly partition: string; readonly token: number })
  | (EventBase & { readonly type: 'work'; readonly partition: string; readonly token: number })
  | (EventBase & {
      readonly type: 'stop';
      readonly partition: string;
      readonly token: number;
      /**
       * The instant after which the owner refused all work for this ownership (its session's
       * validity deadline, in {@link historyNow} time), when it is earlier than `t`: a process frozen
       * by SIGSTOP notices its lost session only after SIGCONT, but did nothing after its deadline.
       * The checker ends the ownership at `min(t, validUntil)` and verifies that no `work` event of it
       * falls after that.
       */
      readonly validUntil?: number;
      readonly cause?: string;
    })
  | (EventBase & { readonly type: 'release'; readonly partition: string; readonly token: number })
  | (EventBase & { readonly type: 'crash' });

/** Something that records ownership events. */
export interface HistorySink {
  record(event: OwnershipEvent): void;
}

/** Keeps events in memory (single-process tests and simulations). */
export class MemoryHistory implements HistorySink {
  readonly events: OwnershipEvent[] = [];
  record(event: OwnershipEvent): void {
    this.events.push(event);
  }
}

/**
 * Appends events as JSON lines to a file, synchronously, so that a `kill -9` loses nothing that was
 * recorded before it. Several processes may append to the same file (each line is one `write`, below
 * PIPE_BUF, so lines never interleave).
 */
export class FileHistory implements HistorySink {
  readonly path: string;
  constructor(path: string) {
    this.path = path;
  }
  record(event: OwnershipEvent): void {
    appendFileSync(this.path, `${JSON.stringify(event)}\n`);
  }
}

/** Reads a JSON-lines history file; a torn last line (a process killed mid-write) is ignored. */
export function readHistory(path: string): OwnershipEvent[] {
  const events: OwnershipEvent[] = [];
  for (const line of readFileSync(path, 'utf8').split('\n')) {
    if (line.trim() === '') continue;
    try {
      events.push(JSON.parse(line) as OwnershipEvent);
    } catch {
      // a line cut short by kill -9
    }
  }
  return events;
}
