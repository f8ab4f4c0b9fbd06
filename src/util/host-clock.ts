/**
 * The host's monotonic clock, shared by every process of one kernel (CLOCK_MONOTONIC through libuv's
 * `uv_hrtime`), unlike `performance.now()`, whose origin is the process's start. A relay and the
 * processes it serves use it to hand over a proof's age without a round trip.
 */
import { readFileSync } from 'node:fs';

/** Milliseconds on the host's monotonic clock. */
export function hostMonotonicMs(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}

let boot: string | null | undefined;

/**
 * This kernel's boot id (`/proc/sys/kernel/random/boot_id`), or `undefined` where there is none.
 * Two processes with the same boot id read the same CLOCK_MONOTONIC (barring time namespaces, which
 * the relay's hello check catches).
 */
export function hostBootId(): string | undefined {
  if (boot === undefined) {
    try {
      boot = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim() || null;
    } catch {
      boot = null;
    }
  }
  return boot ?? undefined;
}

/** A tick of `Date.now()` counts only if it is bracketed this closely by monotonic readings: 20 µs. */
const CALIBRATION_GAP_MS = 0.02;
/** Calibration gives up on a tight bracket after this long and takes the best bound it has: 200 ms. */
const CALIBRATION_BUDGET_MS = 200;

let calibration: { readonly offsetMs: number; readonly errorMs: number } | undefined;

/**
 * `wall − hostMonotonicMs()`, to about 10 µs. `Date.now()` truncates the wall clock to whole ms, so
 * the offset shows where it ticks over: each `Date.now()` reading is bracketed by two monotonic ones,
 * and a tick between two consecutive readings that lie within {@link CALIBRATION_GAP_MS} pins the
 * instant the wall clock reached the new millisecond. (`performance.timeOrigin` is no substitute:
 * Node reads it at start-up, and a process started on a busy host was seen 141 ms off.)
 */
function calibrate(): { offsetMs: number; errorMs: number } {
  const start = hostMonotonicMs();
  let best = -Infinity; // every reading gives a lower bound: wall ≥ d when the monotonic clock read m2
  let prev: { d: number; m1: number } | undefined;
  for (;;) {
    const m1 = hostMonotonicMs();
    const d = Date.now();
    const m2 = hostMonotonicMs();
    if (d - m2 > best) best = d - m2;
    // The wall clock reached d after the previous reading began (m1 of prev) and before this one ended.
    if (prev !== undefined && d !== prev.d && m2 - prev.m1 < CALIBRATION_GAP_MS)
      return { offsetMs: d - (prev.m1 + m2) / 2, errorMs: (m2 - prev.m1) / 2 };
    if (m2 - start > CALIBRATION_BUDGET_MS) return { offsetMs: best + 0.5, errorMs: 0.5 };
    prev = { d, m1 };
  }
}

/**
 * Wall-clock milliseconds with sub-millisecond resolution that every process of one host agrees on:
 * the host's monotonic clock plus an offset calibrated once per process against `Date.now()`. For
 * timestamps compared across processes (histories, benchmarks); it does not follow later steps of
 * the wall clock, which `Date.now()` does.
 */
export function hostWallMs(): number {
  calibration ??= calibrate();
  return hostMonotonicMs() + calibration.offsetMs;
}

/** The offset {@link hostWallMs} adds to the monotonic clock, and a bound on its error (ms). */
export function hostWallCalibration(): { readonly offsetMs: number; readonly errorMs: number } {
  calibration ??= calibrate();
  return calibration;
}
