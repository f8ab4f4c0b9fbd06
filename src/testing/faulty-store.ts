/**
 * A Store wrapper that can cut one client off from the store, for single-process simulations of
 * network faults: while black-holed, new calls neither complete nor fail (until their signal aborts)
 * and watches deliver nothing; on heal, held calls proceed and watches resume in order, as a TCP
 * connection behind a dead router would. `crash()` makes every call fail for good.
 */
import { abortedError, MusterError } from '../errors.js';
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

/** A store seen through a connection that a test can black-hole, heal or crash. */
export class FaultyStore implements Store {
  readonly url: string;
  readonly #inner: Store;
  #holes = 0;
  #crashed = false;
  #heal: (() => void) | undefined;
  #healed: Promise<void> = Promise.resolve();

  constructor(inner: Store) {
    this.#inner = inner;
    this.url = inner.url;
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

  /** Lets held calls and deliveries through. */
  heal(): void {
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
      const onAbort = (): void => reject(abortedError(signal as AbortSignal));
      signal?.addEventListener('abort', onAbort, { once: true });
      void this.#healed.then(() => {
        signal?.removeEventListener('abort', onAbort);
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
  keepAlive(id: LeaseId, options: { signal?: AbortSignal } = {}): Promise<number> {
    return this.#call(options.signal, () => this.#inner.keepAlive(id, options));
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
    return {
      requestProgress: () => inner.requestProgress(),
      close: () => inner.close(),
      async *[Symbol.asyncIterator](): AsyncIterator<WatchBatch> {
        for await (const batch of inner) {
          await gate();
          yield batch;
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
