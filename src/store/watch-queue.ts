/**
 * The delivery half of a watch, shared by the engines: an unbounded queue of batches with at most one
 * waiting consumer, that ends cleanly or with an error.
 *
 * The queue holds every batch until the consumer takes it; neither engine drops batches or ends a
 * slow consumer (a watcher that stops reading grows its queue). Batches queued before a failure are
 * still delivered, then `next()` rejects with the error; `close()` discards them and ends at once.
 */
import { MusterError } from '../errors.js';
import type { WatchBatch } from './types.js';

export interface WatchQueueOptions {
  /**
   * Hand a batch to a waiting consumer on the next microtask instead of at once, so that batches
   * pushed in the same tick can still be merged into it through {@link WatchQueue.last}.
   * Default: false (hand over at once).
   */
  deferHandoff?: boolean;
  /**
   * Called once, synchronously, when the queue ends (by {@link WatchQueue.fail} or
   * {@link WatchQueue.close}), after {@link WatchQueue.ended} turns true and before a waiting
   * consumer is settled. Default: nothing.
   */
  onEnd?: () => void;
}

type Waiter<B> = { resolve: (r: IteratorResult<B>) => void; reject: (e: unknown) => void };

/**
 * A single-consumer async iterator over a growing queue of batches (store batches by default; the
 * configuration relay's client queues its own batch type too).
 *
 * Invariant: a consumer waits only while the queue is empty, and a push hands its batch to a waiting
 * consumer rather than queueing behind it.
 */
export class WatchQueue<B = WatchBatch> implements AsyncIterableIterator<B> {
  readonly #queue: B[] = [];
  readonly #deferHandoff: boolean;
  readonly #onEnd: (() => void) | undefined;
  #waiter: Waiter<B> | undefined;
  #ended = false;
  #error: unknown;

  constructor(options: WatchQueueOptions = {}) {
    this.#deferHandoff = options.deferHandoff === true;
    this.#onEnd = options.onEnd;
  }

  /** True once the queue failed or was closed; batches pushed after that are ignored. */
  get ended(): boolean {
    return this.#ended;
  }

  /** Batches queued and not yet consumed. */
  get pending(): number {
    return this.#queue.length;
  }

  /** The newest batch not yet taken by the consumer, if any (it may still be extended in place). */
  get last(): B | undefined {
    return this.#queue[this.#queue.length - 1];
  }

  /** Appends a batch, or hands it to the waiting consumer. Ignored once the queue has ended. */
  push(batch: B): void {
    if (this.#ended) return;
    const waiter = this.#waiter;
    if (waiter === undefined) {
      this.#queue.push(batch);
      return;
    }
    this.#waiter = undefined;
    if (!this.#deferHandoff) {
      waiter.resolve({ value: batch, done: false });
      return;
    }
    // The batch stays visible through `last` until the microtask takes it.
    this.#queue.push(batch);
    queueMicrotask(() => {
      const next = this.#queue.shift();
      if (next !== undefined) waiter.resolve({ value: next, done: false });
      else if (this.#error !== undefined) waiter.reject(this.#error);
      else waiter.resolve({ value: undefined, done: true });
    });
  }

  /** Ends the queue with `error`, delivered after the batches already queued. Idempotent. */
  fail(error: unknown): void {
    if (this.#ended) return;
    this.#error = error;
    this.#finish();
  }

  /** Discards the queued batches and ends the queue cleanly. Idempotent. */
  close(): void {
    if (this.#ended) return;
    this.#queue.length = 0;
    this.#finish();
  }

  #finish(): void {
    this.#ended = true;
    this.#onEnd?.();
    const waiter = this.#waiter;
    if (waiter === undefined) return;
    this.#waiter = undefined;
    if (this.#error !== undefined) waiter.reject(this.#error);
    else waiter.resolve({ value: undefined, done: true });
  }

  /**
   * The next batch; `done` once the queue ended cleanly and is drained. Rejects with the failure
   * once a failed queue is drained, and with `MUSTER_INVALID_ARGUMENT` when a second consumer calls
   * while one is already waiting.
   */
  next(): Promise<IteratorResult<B>> {
    const batch = this.#queue.shift();
    if (batch !== undefined) return Promise.resolve({ value: batch, done: false });
    if (this.#ended) {
      return this.#error !== undefined
        ? // eslint-disable-next-line @typescript-eslint/prefer-promise-reject-errors
          Promise.reject(this.#error)
        : Promise.resolve({ value: undefined, done: true });
    }
    if (this.#waiter !== undefined) {
      return Promise.reject(
        new MusterError('MUSTER_INVALID_ARGUMENT', 'a watch supports one consumer at a time'),
      );
    }
    return new Promise((resolve, reject) => {
      this.#waiter = { resolve, reject };
    });
  }

  /** Closes the queue (a `break` out of `for await`). */
  return(): Promise<IteratorResult<B>> {
    this.close();
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<B> {
    return this;
  }
}
