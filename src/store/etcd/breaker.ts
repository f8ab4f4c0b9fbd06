/**
 * The circuit breaker of one etcd member (used by client.ts when there are several members).
 *
 * ```
 *            BREAKER_FAILURES failures in a row
 *   closed ──────────────────────────────────────▶ open ◀──────────────┐
 *     ▲                                             │ its delay passes  │ the probe failed
 *     │ a call succeeded                            ▼                   │ (delay doubles)
 *     └──────────────────────────────────────── half-open ─────────────┘
 *                                              one probe at a time
 * ```
 *
 * Closed: every call may go. Open: none may; the client sends them elsewhere, or fails them at once
 * with `NoEndpointError` when every member is open. Half-open: exactly one call — the probe — may go;
 * others are treated as while open. The probe's success closes the breaker; its failure re-opens it
 * for twice the last delay (capped at {@link BREAKER_BACKOFF}'s `maxMs`, with jitter); a probe that
 * ends without a verdict (cancelled by its caller, a stream closed before any answer) frees the slot
 * for the next call. Each call holds an {@link Attempt}, so a late outcome of a call sent before the
 * breaker opened is never taken for the probe's.
 */
import { backoffDelay, type ResolvedBackoff } from '../watched.js';

/** 3 consecutive recoverable failures open a member's breaker (etcd3's default). */
export const BREAKER_FAILURES = 3;
/**
 * How long an open breaker stays open: 1 s the first time, doubled after each failed probe up to 5 s
 * (etcd3's fixed cool-down, which this client had kept: a cluster that returns is used again within
 * 5 s at worst), shortened at random by up to 20 % so that the members of a cluster that failed
 * together are not probed in lock-step. Since only one probe goes per period, a short first period
 * costs one call, not every call of the period, as the old half-open state did.
 */
export const BREAKER_BACKOFF: ResolvedBackoff = { initialMs: 1000, maxMs: 5000, jitter: 0.2 };

/** `closed`: calls go; `open`: none; `half-open`: one probe (see the module comment). */
export type BreakerState = 'closed' | 'open' | 'half-open';

/** One call's (or stream's) claim on a member: whether it is the probe, and whether it was judged. */
export interface Attempt {
  readonly probe: boolean;
  settled: boolean;
}

/** A breaker; `now` is `performance.now()` milliseconds. */
export class Breaker {
  #failures = 0;
  #state: 'closed' | 'open' = 'closed';
  /** Consecutive openings without a success (1 after the first): the exponent of the delay. */
  #openings = 0;
  #openUntil = 0;
  #probe: Attempt | undefined;
  readonly #random: () => number;

  constructor(random: () => number = Math.random) {
    this.#random = random;
  }

  /** Recoverable failures in a row while closed (0 after a success). */
  get failures(): number {
    return this.#failures;
  }

  state(now: number): BreakerState {
    if (this.#state === 'closed') return 'closed';
    return now < this.#openUntil ? 'open' : 'half-open';
  }

  /** When an open breaker turns half-open (`performance.now()` ms); 0 while closed. */
  get openUntil(): number {
    return this.#state === 'closed' ? 0 : this.#openUntil;
  }

  /** Whether a call may go now: always when closed, when half-open only if no probe is out. */
  admits(now: number): boolean {
    const state = this.state(now);
    return state === 'closed' || (state === 'half-open' && this.#probe === undefined);
  }

  /** Claims the right to send one call (the probe when half-open); `undefined` when none may go. */
  admit(now: number): Attempt | undefined {
    if (!this.admits(now)) return undefined;
    if (this.#state === 'closed') return { probe: false, settled: false };
    this.#probe = { probe: true, settled: false };
    return this.#probe;
  }

  /**
   * Records an attempt's outcome: `true` the member answered, `false` it failed recoverably,
   * `undefined` no verdict (only frees a probe's slot). Only an attempt's first outcome counts.
   */
  settle(attempt: Attempt, ok: boolean | undefined, now: number): void {
    if (attempt.settled) return;
    attempt.settled = true;
    const isProbe = attempt === this.#probe;
    if (isProbe) this.#probe = undefined;
    if (ok === true) {
      // The member answered (the probe, or a call sent before the breaker opened): close.
      this.#failures = 0;
      this.#state = 'closed';
      this.#openings = 0;
      return;
    }
    if (ok === undefined) return;
    if (isProbe) {
      this.#open(now);
      return;
    }
    if (this.#state !== 'closed') return; // a late failure of a call sent before the breaker opened
    this.#failures++;
    if (this.#failures >= BREAKER_FAILURES) this.#open(now);
  }

  #open(now: number): void {
    this.#state = 'open';
    this.#openings++;
    this.#openUntil = now + backoffDelay(BREAKER_BACKOFF, this.#openings, this.#random);
  }
}
