/**
 * The one fault-injecting Store wrapper for single-process tests (memory engine, ManualClock). Faults
 * compose; each is the Store-port image of a real one that the etcd suites inject for real (fault
 * proxy, kill -9):
 * - `blackhole()` / `heal()`: calls neither complete nor fail (until their signal aborts), replies are
 *   held too, watches deliver nothing and progress requests are lost; on heal everything held proceeds
 *   in order — a TCP connection behind a dead router (also `pause()` / `resume()`).
 * - `muteWatches()`: watch batches and progress replies are silently dropped while calls still work
 *   (until `heal()`): a watch stream that died without an error.
 * - `breakWatches(err)`: every open watch throws `err` (a dropped connection, a compaction).
 * - `blackholeKeepAlives`, `keepAliveDelayMs`: keep-alives hang, or arrive late (on the clock).
 * - `crash()`: every call fails `MUSTER_CLOSED` for good (a process that died).
 * Counters: `keepAliveCalls`, `lastAckedSentAt` (clock time the last acknowledged keep-alive was sent).
 */
import { type Clock, systemClock } from '../clock.js';
import { abortedError, MusterError } from '../errors.js';
import { onAbort } from '../util/abort.js';
import type {
  Compare,
  DeleteOptions,
  DeleteResult,
  KeySelector,
  KeyValue,
  LeaseGrant,
  LeaseId,
  LeaseInfo,
  PutOptions,
  PutResult,
  RangeOptions,
  RangeResult,
  ReadOptions,
  Store,
  TxnOp,
  TxnResult,
  ValueInput,
  Watch,
  WatchBatch,
  WatchOptions,
} from '../store/index.js';

export interface FaultyStoreOptions {
  /** For `keepAliveDelayMs` and `lastAckedSentAt`. Default: the system clock. */
  readonly clock?: Clock;
}

/** A store seen through a connection that a test can black-hole, mute, break, slow down or crash. */
export class FaultyStore implements Store {
  readonly url: string;
  /** Keep-alives never reach the store (they hang until aborted). */
  blackholeKeepAlives = false;
  /** Keep-alives reach the store only after this long (ms of the clock). */
  keepAliveDelayMs = 0;
  keepAliveCalls = 0;
  /** Clock time (monotonic) at which the last acknowledged keep-alive was sent. */
  lastAckedSentAt: number | undefined;
  readonly #inner: Store;
  readonly #clock: Clock;
  readonly #breakers = new Set<(err: Error) => void>();
  #holes = 0;
  #muted = false;
  #crashed = false;
  #heal: (() => void) | undefined;
  #healed: Promise<void> = Promise.resolve();

  constructor(inner: Store, options: FaultyStoreOptions = {}) {
    this.#inner = inner;
    this.#clock = options.clock ?? systemClock;
    this.url = inner.url;
  }

  /** The wrapped store. */
  get inner(): Store {
    return this.#inner;
  }

  /** True while watches are muted. */
  get muted(): boolean {
    return this.#muted;
  }

  /** Drops watch batches and progress replies (calls still work) until {@link heal}. */
  muteWatches(): void {
    this.#muted = true;
  }

  /** Makes every open watch throw `err` (as a dropped connection or a compaction would). */
  breakWatches(err: Error = new MusterError('MUSTER_UNAVAILABLE', 'connection lost')): void {
    for (const b of [...this.#breakers]) b(err);
  }

  /** {@link blackhole}. */
  pause(): void {
    this.blackhole();
  }

  /** {@link heal}. */
  resume(): void {
    this.heal();
  }

  /** True while black-holed. */
  get blackholed(): boolean {
    return this.#holes > 0;
  }

  /** Holds every call and watch delivery until {@link heal}. */
  blackhole(): void {
    if (this.#holes++ > 0) return;
    this.#healed = new Promise((resolve) => (this.#heal = resolve));
  }

  /** Lets held calls and deliveries through; unmutes watches. */
  heal(): void {
    this.#muted = false;
    if (this.#holes === 0) return;
    this.#holes = 0;
    this.#heal?.();
  }

  /** Every call from now on fails with `MUSTER_CLOSED` (a process that died). */
  crash(): void {
    this.#crashed = true;
    this.heal();
  }

  async #gate(signal: AbortSignal | undefined): Promise<void> {
    if (this.#crashed) throw new MusterError('MUSTER_CLOSED', 'the client crashed');
    if (this.#holes === 0) return;
    await new Promise<void>((resolve, reject) => {
      const off = onAbort(signal, () => reject(abortedError(signal as AbortSignal)));
      void this.#healed.then(() => {
        off();
        resolve();
      });
    });
    if (this.#crashed) throw new MusterError('MUSTER_CLOSED', 'the client crashed');
  }

  /** Holds the reply too: a black hole drops both directions. */
  async #call<T>(signal: AbortSignal | undefined, run: () => Promise<T>): Promise<T> {
    await this.#gate(signal);
    const value = await run();
    await this.#gate(signal);
    return value;
  }

  get(key: string, options: ReadOptions = {}): Promise<KeyValue | undefined> {
    return this.#call(options.signal, () => this.#inner.get(key, options));
  }
  range(selector: string | KeySelector, options: RangeOptions = {}): Promise<RangeResult> {
    return this.#call(options.signal, () => this.#inner.range(selector, options));
  }
  put(key: string, value: ValueInput, options: PutOptions = {}): Promise<PutResult> {
    return this.#call(options.signal, () => this.#inner.put(key, value, options));
  }
  delete(selector: string | KeySelector, options: DeleteOptions = {}): Promise<DeleteResult> {
    return this.#call(options.signal, () => this.#inner.delete(selector, options));
  }
  txn(
    compares: readonly Compare[],
    onSuccess: readonly TxnOp[],
    onFailure?: readonly TxnOp[],
    options: { signal?: AbortSignal } = {},
  ): Promise<TxnResult> {
    return this.#call(options.signal, () => this.#inner.txn(compares, onSuccess, onFailure, options));
  }
  compact(revision: number): Promise<void> {
    return this.#call(undefined, () => this.#inner.compact(revision));
  }
  headRevision(options: { signal?: AbortSignal } = {}): Promise<number> {
    return this.#call(options.signal, () => this.#inner.headRevision(options));
  }
  grantLease(ttlSeconds: number, options: { signal?: AbortSignal } = {}): Promise<LeaseGrant> {
    return this.#call(options.signal, () => this.#inner.grantLease(ttlSeconds, options));
  }
  async keepAlive(id: LeaseId, options: { signal?: AbortSignal } = {}): Promise<number> {
    this.keepAliveCalls++;
    const sentAt = this.#clock.monotonic();
    if (this.blackholeKeepAlives) {
      const signal = options.signal;
      return new Promise<number>((_, reject) => {
        onAbort(signal, () => reject(abortedError(signal as AbortSignal)));
      });
    }
    if (this.keepAliveDelayMs > 0) await this.#clock.sleep(this.keepAliveDelayMs, options.signal);
    const ttl = await this.#call(options.signal, () => this.#inner.keepAlive(id, options));
    this.lastAckedSentAt = sentAt;
    return ttl;
  }
  revokeLease(id: LeaseId, options: { signal?: AbortSignal } = {}): Promise<void> {
    return this.#call(options.signal, () => this.#inner.revokeLease(id, options));
  }
  leaseTimeToLive(id: LeaseId, options: { signal?: AbortSignal } = {}): Promise<LeaseInfo | undefined> {
    return this.#call(options.signal, () => this.#inner.leaseTimeToLive(id, options));
  }

  watch(selector: string | KeySelector, options: WatchOptions = {}): Watch {
    const inner = this.#inner.watch(selector, options);
    const gate = (): Promise<void> => this.#gate(options.signal);
    const lost = (): boolean => this.#muted || this.#holes > 0;
    const muted = (): boolean => this.#muted;
    const breakers = this.#breakers;
    let breakWith: ((err: Error) => void) | undefined;
    const broken = new Promise<never>((_, reject) => (breakWith = reject));
    broken.catch(() => undefined);
    const breaker = (err: Error): void => {
      breakWith?.(err);
      inner.close();
    };
    breakers.add(breaker);
    return {
      // Lost while black-holed or muted, as over a dead connection.
      requestProgress: () => {
        if (!lost()) inner.requestProgress();
      },
      close: () => {
        breakers.delete(breaker);
        inner.close();
      },
      async *[Symbol.asyncIterator](): AsyncIterator<WatchBatch> {
        const it = inner[Symbol.asyncIterator]();
        try {
          for (;;) {
            const r = await Promise.race([it.next(), broken]);
            if (r.done === true) return;
            if (muted()) continue;
            await gate();
            yield r.value;
          }
        } finally {
          breakers.delete(breaker);
        }
      },
    };
  }

  /** Does not close the shared inner store. */
  async close(): Promise<void> {}
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
