/**
 * Pushed proofs, spread over time. A relay proves its mirror complete once per verification round;
 * passing each proof to 150 processes at once would wake them all together, and a burst of 150
 * wake-ups on a 2-core host delays whatever else is due in those milliseconds (an activation instant,
 * a version arriving). So the relay drips: after each new proof, every {@link PROOF_DRIP_TICK_MS} it
 * sends the latest proof to the next few watches that lack it, sized so that all have it within half
 * the shortest period asked for. A watch thus holds a proof at most 1.5 periods old (plus the
 * relay's round trip), well inside the 3 periods after which its mirror falls back to reading.
 *
 * A proof may be sent at any moment, not only right after a round: the relay forwards every event the
 * moment it applies it, so whatever revision it has applied has already been written to every watch.
 */
import type { Clock, TimerHandle } from '../clock.js';
import { hostMonotonicMs } from '../util/host-clock.js';

/** Drip granularity: 10 ms, i.e. at most 100 small wake-ups a second for the relay. */
export const PROOF_DRIP_TICK_MS = 10;
/** Shortest period a watch may ask for: 50 ms (the relay proves itself at most 20 times a second). */
export const MIN_PROOF_PERIOD_MS = 50;

/** A watch that asked for pushed proofs. */
export interface ProofTarget {
  readonly wid: number;
  /** Wanted period between proofs, ms. */
  readonly every: number;
  /** Monotonic instant of the proof it last got (so one proof is sent to it once). */
  lastProof: number;
  writeRaw(line: string): void;
}

/** The relay mirror's freshness, read at each tick. */
export interface ProofSource {
  verifiedMono(): number;
  applied(): number;
}

export class ProofDrip {
  readonly #clock: Clock;
  readonly #source: ProofSource;
  #targets: ProofTarget[] = [];
  #cursor = 0;
  #period: number | undefined;
  #timer: TimerHandle | undefined;

  constructor(clock: Clock, source: ProofSource) {
    this.#clock = clock;
    this.#source = source;
  }

  get size(): number {
    return this.#targets.length;
  }

  /** The shortest period any target asked for (at least {@link MIN_PROOF_PERIOD_MS}), or `undefined`. */
  get period(): number | undefined {
    return this.#period;
  }

  add(target: ProofTarget): void {
    this.#targets.push(target);
    this.#updatePeriod();
    this.notify();
  }

  #updatePeriod(): void {
    let ms: number | undefined;
    for (const t of this.#targets) if (ms === undefined || t.every < ms) ms = t.every;
    this.#period = ms === undefined ? undefined : Math.max(MIN_PROOF_PERIOD_MS, ms);
  }

  /** The relay's proof may have advanced: start dripping it if it did. */
  notify(): void {
    if (this.#timer !== undefined || this.#targets.length === 0) return;
    this.#timer = this.#clock.setTimeout(() => this.#tick(), PROOF_DRIP_TICK_MS);
  }

  delete(target: ProofTarget): void {
    const i = this.#targets.indexOf(target);
    if (i < 0) return;
    this.#targets.splice(i, 1);
    this.#updatePeriod();
  }

  clear(): void {
    this.#targets = [];
    this.#period = undefined;
  }

  close(): void {
    this.clear();
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #tick(): void {
    this.#timer = undefined;
    const n = this.#targets.length;
    if (n === 0) return;
    if (this.#cursor >= n) this.#cursor = 0;
    const verified = this.#source.verifiedMono();
    let quota = Math.ceil((n * PROOF_DRIP_TICK_MS) / ((this.period as number) / 2));
    let tail: string | undefined;
    let due = false;
    for (let scanned = 0; scanned < n; scanned++) {
      const t = this.#targets[this.#cursor] as ProofTarget;
      if (verified > t.lastProof) {
        if (quota === 0) {
          due = true;
          break;
        }
        quota--;
        t.lastProof = verified;
        tail ??= `,"proof":${this.#source.applied()},"age":${this.#clock.monotonic() - verified},"mono":${hostMonotonicMs()}}\n`;
        t.writeRaw(`{"wid":${t.wid}${tail}`);
      }
      this.#cursor = (this.#cursor + 1) % n;
    }
    // Sleeps when every watch has the latest proof; notify() wakes it at the next one.
    if (due) this.#timer = this.#clock.setTimeout(() => this.#tick(), PROOF_DRIP_TICK_MS);
  }
}
