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
