/**
 * The watched view: the one list-then-watch loop of muster (brief §1, §6). Every in-memory copy of
 * store state — configuration mirrors, instance views, the partitions view, the proxy's routing
 * table — is this loop plus a decoder of records.
 *
 * ```
 *   listing ──ok──▶ watching ──error / stream ended──▶ backing-off ──▶ listing
 *      │ error                                            ▲
 *      └──────────────────────────────────────────────────┘
 *   any state ──close() / signal──▶ closed        any state ──fatal error──▶ failed
 * ```
 *
 * It lists the prefix at a revision R and delivers a `reset` with every key-value, then watches from
 * R + 1 and delivers the watch's batches as they come: ordered, no gaps, no duplicates (the store's
 * watch guarantees them from R + 1, and a reset replaces everything before it). When the watch fails
 * — `MUSTER_COMPACTED`, a broken stream, a source that ends it — or a listing fails, it waits a capped
 * exponential back-off with jitter on the injected clock and lists again: the new `reset` covers
 * whatever was missed, so a consumer that applies `reset` as "replace everything" never misses a
 * change of state. See docs/store.md, "The watched view".
 */
import { type Clock, systemClock, type TimerHandle } from '../clock.js';
import { abortedError, isMusterError, MusterError } from '../errors.js';
import { abortable, onAbort } from '../util/abort.js';
import { type Duration, toMillis } from '../util/duration.js';
import type { KeyValue, WatchBatch, WatchOptions } from './types.js';
import { WatchQueue } from './watch-queue.js';

/**
 * 50 ms, doubling to 2 s, each delay shortened by up to half at random: re-list quickly after a
 * blip, do not hammer a store that is down, and do not let a thousand views that lost the same
 * store re-list in the same millisecond.
 */
export const DEFAULT_WATCH_BACKOFF = { initialMs: 50, maxMs: 2000, jitter: 0.5 } as const;

export interface BackoffOptions {
  /** First delay after a failure. Default: {@link DEFAULT_WATCH_BACKOFF}.initialMs. */
  initial?: Duration;
  /** Cap of the doubling delay. Default: {@link DEFAULT_WATCH_BACKOFF}.maxMs. */
  max?: Duration;
  /** Fraction in [0, 1] by which each delay may be shortened at random. Default: 0.5. */
  jitter?: number;
}

/** What a watch of a source yields: at least a type and the revision it brings the view to. */
export interface WatchedBatch {
  readonly type: string;
  readonly revision: number;
}

/** A live watch of a {@link WatchSource}. */
export interface SourceWatch<B extends WatchedBatch = WatchBatch> extends AsyncIterable<B> {
  requestProgress(): void;
  close(): void;
}

/**
 * What the loop reads: a {@link Store} (`range`, `watch`), or a source with richer batches (the
 * configuration relay's watch also yields proofs).
 */
export interface WatchSource<B extends WatchedBatch = WatchBatch, O extends WatchOptions = WatchOptions> {
  range(
    prefix: string,
    options: { signal?: AbortSignal },
  ): Promise<{ readonly kvs: readonly KeyValue[]; readonly revision: number }>;
  watch(prefix: string, options: O): SourceWatch<B>;
}

/** The prefix as listed at `revision`: replaces everything the consumer held. */
export interface ResetChange {
  readonly type: 'reset';
  readonly revision: number;
  readonly kvs: readonly KeyValue[];
  /** When the listing was sent, on the clock's monotonic scale: the reset reflects the store as of then or later. */
  readonly sentAt: number;
}

/**
 * What the view delivers, in order: a `reset` (a full listing), then the watch's batches — for a
 * store, `events` (one or more events; `revision` = the last event's) and `progress` (nothing new up
 * to `revision`) — until the next `reset`.
 */
export type WatchedChange<B extends WatchedBatch = WatchBatch> = ResetChange | B;

/** The loop's state. */
export type WatchedState = 'listing' | 'watching' | 'backing-off' | 'closed' | 'failed';

export interface WatchPrefixOptions<
  B extends WatchedBatch = WatchBatch,
  O extends WatchOptions = WatchOptions,
> {
  /** Back-off delays and the `listTimeout` timer run on it. Default: the system clock. */
  clock?: Clock;
  /** Closes the view (as {@link WatchedPrefix.close}). */
  signal?: AbortSignal;
  /** Re-list back-off. Default: {@link DEFAULT_WATCH_BACKOFF}. */
  backoff?: BackoffOptions;
  /**
   * Deliver each change to this function, synchronously, inside the loop — the next batch is not read
   * before it returns — instead of through the async iterator (which then may not be used). A throw
   * counts as a failed watch: the view backs off and lists again. Default: deliver through the iterator.
   */
  onChange?: (change: WatchedChange<B>) => void;
  /**
   * Called before each back-off with the error (`undefined` when the watch ended without one, e.g.
   * after {@link WatchedPrefix.restart}) and the delay. Default: nothing.
   */
  onRetry?: (error: unknown, delayMs: number) => void;
  /**
   * Errors that end the view instead of a re-list. Default: `MUSTER_CLOSED` (the store was closed)
   * and `MUSTER_INVALID_ARGUMENT` (the prefix will never work).
   */
  isFatal?: (error: unknown) => boolean;
  /** Abort a listing after this many ms (read per listing). Default: no limit. */
  listTimeoutMs?: () => number;
  /** Extra options for each `watch()` call (read per watch), e.g. `prevKv`. Default: none. */
  watchOptions?: () => Omit<O, 'fromRevision' | 'signal'>;
  /** Random numbers in [0, 1) for the jitter. Default: `Math.random`. */
  random?: () => number;
}

function defaultFatal(err: unknown): boolean {
  return isMusterError(err, 'MUSTER_CLOSED') || isMusterError(err, 'MUSTER_INVALID_ARGUMENT');
}

/** Back-off options resolved to milliseconds. */
export interface ResolvedBackoff {
  readonly initialMs: number;
  readonly maxMs: number;
  readonly jitter: number;
}

export function resolveBackoff(options: BackoffOptions | undefined): ResolvedBackoff {
  const initialMs = toMillis(options?.initial ?? DEFAULT_WATCH_BACKOFF.initialMs, 'backoff.initial');
  const maxMs = toMillis(options?.max ?? DEFAULT_WATCH_BACKOFF.maxMs, 'backoff.max');
  const jitter = options?.jitter ?? DEFAULT_WATCH_BACKOFF.jitter;
  if (maxMs < initialMs) {
    throw new MusterError(
      'MUSTER_INVALID_ARGUMENT',
      `backoff.max (${maxMs}ms) must be at least backoff.initial (${initialMs}ms)`,
    );
  }
  if (!(typeof jitter === 'number' && jitter >= 0 && jitter <= 1)) {
    throw new MusterError(
      'MUSTER_INVALID_ARGUMENT',
      `backoff.jitter must be in [0, 1], got ${String(jitter)}`,
    );
  }
  return { initialMs, maxMs, jitter };
}

/**
 * The delay before attempt `failures` (1 = the first retry): `initial · 2^(failures − 1)` capped at
 * `max`, shortened at random by up to `jitter` of itself.
 */
export function backoffDelay(backoff: ResolvedBackoff, failures: number, random: () => number): number {
  const base = Math.min(backoff.maxMs, backoff.initialMs * 2 ** Math.min(Math.max(0, failures - 1), 30));
  return base * (1 - backoff.jitter * random());
}

/**
 * Opens a watched view of `prefix` on `source` (a store, or anything with its `range` and `watch`).
 * It starts listing at once; `await view.ready()` for the first listing. Throws
 * `MUSTER_INVALID_ARGUMENT` for bad back-off options, `MUSTER_ABORTED` when `signal` has fired.
 */
export function watchPrefix<B extends WatchedBatch = WatchBatch, O extends WatchOptions = WatchOptions>(
  source: WatchSource<B, O>,
  prefix: string,
  options: WatchPrefixOptions<B, O> = {},
): WatchedPrefix<B, O> {
  return new WatchedPrefix(source, prefix, options);
}

/**
 * A watched prefix: the revision it reflects, its state, and its changes — through `onChange` or as
 * an async iterable of {@link WatchedChange} (one consumer; changes queue until taken).
 */
export class WatchedPrefix<
  B extends WatchedBatch = WatchBatch,
  O extends WatchOptions = WatchOptions,
> implements AsyncIterable<WatchedChange<B>> {
  readonly prefix: string;
  readonly #source: WatchSource<B, O>;
  readonly #clock: Clock;
  readonly #backoff: ResolvedBackoff;
  readonly #options: WatchPrefixOptions<B, O>;
  readonly #closer = new AbortController();
  readonly #queue: WatchQueue<WatchedChange<B>> | undefined;
  readonly #ready: Promise<void>;
  #markReady!: () => void;
  #failReady!: (err: unknown) => void;
  #state: WatchedState = 'listing';
  #revision = 0;
  #lists = 0;
  #watch: SourceWatch<B> | undefined;
  #failure: unknown;
  /** Stops listening to `options.signal`. */
  readonly #offAbort: () => void;
  readonly #done: Promise<void>;

  constructor(source: WatchSource<B, O>, prefix: string, options: WatchPrefixOptions<B, O>) {
    if (options.signal?.aborted) throw abortedError(options.signal);
    this.prefix = prefix;
    this.#source = source;
    this.#clock = options.clock ?? systemClock;
    this.#backoff = resolveBackoff(options.backoff);
    this.#options = options;
    this.#queue = options.onChange === undefined ? new WatchQueue<WatchedChange<B>>() : undefined;
    this.#ready = new Promise<void>((resolve, reject) => {
      this.#markReady = resolve;
      this.#failReady = reject;
    });
    this.#ready.catch(() => undefined);
    this.#offAbort = onAbort(options.signal, () => this.close());
    this.#done = this.#run().then(
      () => this.#failReady(new MusterError('MUSTER_CLOSED', `the watched view of ${prefix} was closed`)),
      (err: unknown) => {
        this.#failure = err;
        this.#state = 'failed';
        this.#failReady(err);
        this.#queue?.fail(err);
      },
    );
  }

  /** The revision of the last change delivered (or queued): the view reflects the store as of it. */
  get revision(): number {
    return this.#revision;
  }

  get state(): WatchedState {
    return this.#state;
  }

  /** How many times the view listed again after its first listing. */
  get relists(): number {
    return Math.max(0, this.#lists - 1);
  }

  /** Settles (never rejects) when the loop has stopped: after close, or when the view failed. */
  get done(): Promise<void> {
    return this.#done;
  }

  /** Why the view failed (state `failed`), else `undefined`. */
  get failure(): unknown {
    return this.#failure;
  }

  /** The live watch of the source (state `watching`), e.g. to reach a relay watch's extras. */
  get watch(): SourceWatch<B> | undefined {
    return this.#watch;
  }

  /**
   * Resolves once the first listing has been delivered. Rejects with the fatal error if the view
   * failed first, `MUSTER_CLOSED` if it was closed first, `MUSTER_ABORTED` when `signal` fires.
   * While the source is unreachable it keeps waiting (the loop keeps retrying).
   */
  async ready(options: { signal?: AbortSignal } = {}): Promise<void> {
    return abortable(this.#ready, options.signal);
  }

  /** Asks the live watch for a progress notification (nothing while listing or backing off). */
  requestProgress(): void {
    this.#watch?.requestProgress();
  }

  /** Ends the live watch: the view backs off briefly and lists again (for a watch that went silent). */
  restart(): void {
    this.#watch?.close();
  }

  /** Stops the loop; the iterator ends (queued changes are dropped). Idempotent. */
  close(): void {
    if (this.#closer.signal.aborted) return;
    this.#closer.abort();
    this.#offAbort();
    this.#watch?.close();
    if (this.#state !== 'failed') this.#state = 'closed';
    this.#queue?.close();
  }

  /** Closes and waits until the loop has stopped. */
  async [Symbol.asyncDispose](): Promise<void> {
    this.close();
    await this.#done;
  }

  /**
   * The changes, starting with the first `reset`. Ends on close; throws the fatal error when the view
   * failed. One consumer. Throws `MUSTER_INVALID_ARGUMENT` when the view delivers to `onChange`.
   */
  [Symbol.asyncIterator](): AsyncIterator<WatchedChange<B>> {
    if (this.#queue === undefined) {
      throw new MusterError('MUSTER_INVALID_ARGUMENT', 'this watched view delivers its changes to onChange');
    }
    return this.#queue;
  }

  #deliver(change: WatchedChange<B>): void {
    if (change.revision > this.#revision || change.type === 'reset') this.#revision = change.revision;
    if (this.#queue !== undefined) this.#queue.push(change);
    else this.#options.onChange?.(change);
  }

  /** Lists the prefix, with the listing timeout when there is one. */
  async #list(
    signal: AbortSignal,
  ): Promise<{ readonly kvs: readonly KeyValue[]; readonly revision: number }> {
    const timeoutMs = this.#options.listTimeoutMs?.();
    if (timeoutMs === undefined) return this.#source.range(this.prefix, { signal });
    const ac = new AbortController();
    const timer: TimerHandle = this.#clock.setTimeout(() => ac.abort(), timeoutMs);
    const offClose = onAbort(signal, () => ac.abort());
    try {
      return await this.#source.range(this.prefix, { signal: ac.signal });
    } finally {
      this.#clock.clearTimeout(timer);
      offClose();
    }
  }

  async #run(): Promise<void> {
    const signal = this.#closer.signal;
    const isFatal = this.#options.isFatal ?? defaultFatal;
    const random = this.#options.random ?? Math.random;
    let failures = 0;
    while (!signal.aborted) {
      let error: unknown;
      // A watch that delivered something, or lived past the longest delay, was healthy: the next
      // failure starts the back-off again from its first delay.
      let healthy = false;
      try {
        this.#state = 'listing';
        const sentAt = this.#clock.monotonic();
        const listed = await this.#list(signal);
        if (signal.aborted) return;
        this.#lists++;
        this.#deliver({ type: 'reset', revision: listed.revision, kvs: listed.kvs, sentAt });
        this.#markReady();
        const extra = this.#options.watchOptions?.();
        const watch = this.#source.watch(this.prefix, { ...extra, fromRevision: listed.revision + 1 } as O);
        this.#watch = watch;
        this.#state = 'watching';
        if (signal.aborted) {
          watch.close();
          return;
        }
        const started = this.#clock.monotonic();
        for await (const batch of watch) {
          healthy = true;
          this.#deliver(batch);
        }
        if (this.#clock.monotonic() - started >= this.#backoff.maxMs) healthy = true;
      } catch (err) {
        if (signal.aborted) return;
        if (isFatal(err)) throw err;
        error = err;
      } finally {
        this.#watch = undefined;
      }
      if (signal.aborted) return;
      failures = healthy ? 1 : failures + 1;
      const delay = backoffDelay(this.#backoff, failures, random);
      this.#state = 'backing-off';
      try {
        this.#options.onRetry?.(error, delay);
      } catch {
        // A throwing observer must not stop the loop.
      }
      await this.#clock.sleep(delay, signal).catch(() => undefined);
    }
  }
}
