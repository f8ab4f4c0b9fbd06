/**
 * Time, injected. Every timing decision in muster reads a {@link Clock}, so tests drive time with a
 * {@link ManualClock} instead of sleeping, and simulations run thousands of instances in one process.
 */
import { abortedError } from './errors.js';
import { onAbort } from './util/abort.js';

/** An opaque handle returned by {@link Clock.setTimeout}. */
export interface TimerHandle {
  /** Keep the process alive while the timer is armed (system clock only; default: do not). */
  ref?(): void;
}

export interface Clock {
  /** Wall-clock time, milliseconds since the Unix epoch. May jump. */
  now(): number;
  /** Monotonic time in milliseconds from an arbitrary origin. Never jumps backwards. */
  monotonic(): number;
  /** Calls `fn` after `ms` milliseconds of monotonic time. */
  setTimeout(fn: () => void, ms: number): TimerHandle;
  clearTimeout(handle: TimerHandle): void;
  /** Resolves after `ms`; rejects with `MUSTER_ABORTED` when `signal` fires first. */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

function sleepWith(clock: Clock, ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(abortedError(signal));
      return;
    }
    const handle = clock.setTimeout(() => {
      off();
      resolve();
    }, ms);
    const off = onAbort(signal, () => {
      clock.clearTimeout(handle);
      reject(abortedError(signal as AbortSignal));
    });
  });
}

/** The real clock: `Date.now()`, `performance.now()` and Node's timers (unref'd by default). */
export class SystemClock implements Clock {
  now(): number {
    return Date.now();
  }
  monotonic(): number {
    return performance.now();
  }
  setTimeout(fn: () => void, ms: number): TimerHandle {
    const t = setTimeout(fn, Math.max(0, ms));
    t.unref();
    return t;
  }
  clearTimeout(handle: TimerHandle): void {
    clearTimeout(handle as NodeJS.Timeout);
  }
  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return sleepWith(this, ms, signal);
  }
}

/** The process-wide default clock. */
export const systemClock: Clock = new SystemClock();

interface ManualTimer extends TimerHandle {
  readonly at: number;
  readonly seq: number;
  readonly fn: () => void;
  cancelled: boolean;
}

/**
 * A clock that moves only when told to. Timers fire in deadline order (ties in creation order)
 * during {@link ManualClock.advance}; a timer armed by a callback fires in the same advance if due.
 */
export class ManualClock implements Clock {
  #mono: number;
  #wallOffset: number;
  #seq = 0;
  #timers: ManualTimer[] = [];

  constructor(options: { now?: number; monotonic?: number } = {}) {
    this.#mono = options.monotonic ?? 0;
    this.#wallOffset = (options.now ?? Date.UTC(2026, 0, 1)) - this.#mono;
  }

  now(): number {
    return this.#mono + this.#wallOffset;
  }
  monotonic(): number {
    return this.#mono;
  }
  setTimeout(fn: () => void, ms: number): TimerHandle {
    const timer: ManualTimer = { at: this.#mono + Math.max(0, ms), seq: this.#seq++, fn, cancelled: false };
    this.#timers.push(timer);
    return timer;
  }
  clearTimeout(handle: TimerHandle): void {
    (handle as ManualTimer).cancelled = true;
  }
  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return sleepWith(this, ms, signal);
  }

  /** Number of armed, uncancelled timers. */
  get pendingTimers(): number {
    return this.#timers.filter((t) => !t.cancelled).length;
  }

  /** Moves monotonic and wall time forward by `ms`, firing every timer that falls due, in order. */
  advance(ms: number): void {
    const target = this.#mono + ms;
    for (;;) {
      this.#timers = this.#timers.filter((t) => !t.cancelled);
      let next: ManualTimer | undefined;
      for (const t of this.#timers) {
        if (
          t.at <= target &&
          (next === undefined || t.at < next.at || (t.at === next.at && t.seq < next.seq))
        ) {
          next = t;
        }
      }
      if (next === undefined) break;
      this.#mono = Math.max(this.#mono, next.at);
      next.cancelled = true;
      next.fn();
    }
    this.#mono = target;
  }

  /** Advances by `ms` and lets promise callbacks run between timers (for code that awaits). */
  async tick(ms: number, step = ms): Promise<void> {
    let left = ms;
    while (left > 0) {
      const d = Math.min(step, left);
      this.advance(d);
      left -= d;
      await flushMicrotasks();
    }
    if (ms === 0) await flushMicrotasks();
  }

  /** Makes the wall clock jump by `ms` (positive or negative) without moving monotonic time. */
  jumpWall(ms: number): void {
    this.#wallOffset += ms;
  }
}

/** Lets pending promise reactions run (a macrotask turn). */
export function flushMicrotasks(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}
