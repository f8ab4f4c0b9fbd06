/**
 * A watch on etcd, written directly on the gRPC Watch stream (one stream per watch).
 *
 * Why not etcd3's `Watcher`: it resumes from the response header's revision + 1, which skips events
 * when etcd splits a catch-up into several responses (their header carries the head, not the last
 * event), and it cannot send progress requests. Here the resume point is always the revision of the
 * last delivered event + 1 (or of a proven progress + 1), events below it are dropped on arrival,
 * and a response never ends inside a revision, so a reconnect yields no gap and no duplicate.
 *
 * Progress ({@link Watch.requestProgress}) is proved in two steps: a linearizable read gives the
 * head H at request time, then a progress batch is yielded once a source that is safe on the
 * connected server shows that every event up to some R ≥ H was delivered: an event at or above H,
 * etcd's periodic progress notification (sent through the same channel as the events), or, on
 * servers where the fix for etcd#15220 is present (≥ 3.4.25, ≥ 3.5.8), the answer to a
 * `progress_request`. Older servers answer those requests out of band and may overtake pending
 * events, so they are not used there; see docs/store.md.
 */
import type { GrpcStream } from './grpc.js';
import { type Event, EventType, type WatchRequest, type WatchResponse } from './rpc-codec.js';
import { MusterError } from '../../errors.js';
import { onAbort } from '../../util/abort.js';
import type { Watch, WatchBatch, WatchEvent } from '../types.js';
import { WatchQueue } from '../watch-queue.js';
import type { KeyCodec, WireRange } from './codec.js';
import { fromEtcdError } from './errors.js';

export type WatchStream = GrpcStream<WatchRequest, WatchResponse>;

/** How progress requests are answered by the connected etcd (see the module comment). */
export type ProgressMode = 'request' | 'periodic';

/** What a watch needs from its store. */
export interface WatchContext {
  readonly codec: KeyCodec;
  openStream(): Promise<WatchStream>;
  /** Linearizable head revision. */
  headRevision(): Promise<number>;
  progressMode(): Promise<ProgressMode>;
  onEnd(watch: EtcdWatch): void;
}

/** First delay before re-opening a broken watch stream; doubles up to {@link MAX_RECONNECT_DELAY_MS}. */
export const FIRST_RECONNECT_DELAY_MS = 50;
/** Cap of the reconnect back-off: a member restart or election takes about a second. */
export const MAX_RECONNECT_DELAY_MS = 1000;
/** How often an unanswered progress request is repeated (etcd may stay silent while a watcher syncs). */
export const PROGRESS_RESEND_MS = 200;

/** A live watch; see the module comment for its guarantees. */
export class EtcdWatch implements Watch {
  readonly #ctx: WatchContext;
  readonly #range: WireRange;
  readonly #prevKv: boolean;
  readonly #signal: AbortSignal | undefined;
  /** Stops listening to the signal (a no-op until the watch listens). */
  #offAbort: () => void = () => undefined;
  /** Next revision to deliver; `undefined` until the first stream is created (watch from head + 1). */
  #next: number | undefined;
  readonly #notBefore: number;
  #stream: WatchStream | undefined;
  #watchId: string | undefined;
  #retryDelay = FIRST_RECONNECT_DELAY_MS;
  #retryTimer: NodeJS.Timeout | undefined;
  readonly #queue = new WatchQueue({ onEnd: () => this.#onEnd() });
  /** Head revision a pending progress request must cover; `null` while the read is in flight. */
  #progressTarget: number | null | undefined;
  #progressMode: ProgressMode | undefined;
  #progressTimer: NodeJS.Timeout | undefined;
  #markStarted: () => void = () => undefined;
  /**
   * Settles when the server has registered the watch (or the watch ended). The store holds back its
   * writes until then for a watch from "head + 1", so that every write issued after `watch()`
   * returned is delivered, as with the memory engine.
   */
  readonly started: Promise<void>;

  constructor(
    ctx: WatchContext,
    range: WireRange,
    /** `notBefore`: with no `fromRevision`, deliver nothing older than this (what the client has seen). */
    options: { fromRevision?: number; notBefore?: number; prevKv?: boolean; signal?: AbortSignal },
    /** Start already failed with this error (closed store, bad option), as the memory engine does. */
    failWith?: unknown,
  ) {
    this.#ctx = ctx;
    this.#range = range;
    this.#prevKv = options.prevKv === true;
    this.#next = options.fromRevision;
    this.#notBefore = options.notBefore ?? 0;
    this.#signal = options.signal;
    this.started = new Promise((resolve) => (this.#markStarted = resolve));
    if (failWith !== undefined) {
      this.#queue.fail(failWith);
      return;
    }
    if (this.#signal?.aborted) {
      this.#queue.close();
      return;
    }
    this.#offAbort = onAbort(this.#signal, () => this.close());
    this.#connect();
  }

  /** The next revision this watch will deliver (for tests and diagnostics). */
  get nextRevision(): number | undefined {
    return this.#next;
  }

  requestProgress(): void {
    if (this.#queue.ended || this.#progressTarget !== undefined) return;
    this.#progressTarget = null;
    const attempt = (): void => {
      this.#ctx.headRevision().then(
        (head) => {
          if (this.#queue.ended) return;
          this.#progressTarget = head;
          if (this.#tryAnswerProgress()) return;
          this.#sendProgressRequest();
        },
        () => {
          // The store is unreachable: try again; the watch itself reconnects on its own.
          if (!this.#queue.ended) this.#progressTimer = setTimeout(attempt, MAX_RECONNECT_DELAY_MS);
        },
      );
    };
    attempt();
  }

  close(): void {
    this.#queue.close();
  }

  // ---- the stream --------------------------------------------------------------------------------

  #connect(): void {
    this.#retryTimer = undefined;
    if (this.#queue.ended) return;
    this.#ctx.progressMode().then(
      (mode) => {
        this.#progressMode = mode;
      },
      () => undefined,
    );
    this.#ctx.openStream().then(
      (stream) => {
        if (this.#queue.ended) {
          stream.cancel();
          return;
        }
        this.#stream = stream;
        this.#watchId = undefined;
        stream.on('data', (res) => this.#onResponse(stream, res));
        stream.on('error', (err) => this.#onStreamEnd(stream, err));
        stream.on('end', () =>
          this.#onStreamEnd(stream, new MusterError('MUSTER_UNAVAILABLE', 'the etcd watch stream ended')),
        );
        stream.write({
          create_request: {
            ...this.#range,
            start_revision: this.#next ?? 0,
            progress_notify: true,
            prev_kv: this.#prevKv,
          },
        });
      },
      (err: unknown) => this.#retryOrFail(fromEtcdError(err)),
    );
  }

  #onStreamEnd(stream: WatchStream, err: unknown): void {
    if (stream !== this.#stream) return;
    this.#stream = undefined;
    this.#watchId = undefined;
    if (this.#queue.ended) return;
    this.#retryOrFail(fromEtcdError(err, this.#next === undefined ? {} : { revision: this.#next }));
  }

  #retryOrFail(error: MusterError): void {
    if (this.#queue.ended) return;
    if (!error.retryable) {
      this.fail(error);
      return;
    }
    const delay = this.#retryDelay;
    this.#retryDelay = Math.min(MAX_RECONNECT_DELAY_MS, this.#retryDelay * 2);
    this.#retryTimer = setTimeout(() => this.#connect(), delay);
  }

  #onResponse(stream: WatchStream, res: WatchResponse): void {
    if (stream !== this.#stream || this.#queue.ended) return;
    if (res.created) {
      if (res.canceled) {
        this.#onCancel(stream, res);
        return;
      }
      this.#watchId = res.watch_id;
      this.#retryDelay = FIRST_RECONNECT_DELAY_MS;
      // From "head + 1": the member's head, or past what this client has seen if the member lags.
      this.#next ??= Math.max(Number(res.header?.revision ?? 0) + 1, this.#notBefore);
      this.#markStarted();
      if (this.#progressTarget !== undefined && this.#progressTarget !== null && !this.#tryAnswerProgress()) {
        this.#sendProgressRequest();
      }
      return;
    }
    if (res.canceled) {
      this.#onCancel(stream, res);
      return;
    }
    if (res.events.length > 0) {
      if (res.watch_id === this.#watchId) this.#onEvents(res.events);
      return;
    }
    // A progress notification: periodic ones travel with the events of their watcher and are
    // always safe; answers to progress requests (watch id -1) only on fixed servers.
    const safe =
      res.watch_id === this.#watchId || (res.watch_id === '-1' && this.#progressMode === 'request');
    if (!safe || this.#next === undefined) return;
    const revision = Number(res.header?.revision ?? 0);
    if (revision + 1 > this.#next) this.#next = revision + 1;
    this.#tryAnswerProgress();
  }

  #onCancel(stream: WatchStream, res: WatchResponse): void {
    this.#stream = undefined;
    this.#watchId = undefined;
    stream.cancel();
    const compactRevision = Number(res.compact_revision);
    if (compactRevision > 0) {
      this.fail(
        new MusterError(
          'MUSTER_COMPACTED',
          `watch cannot resume at revision ${this.#next ?? '?'}: history before ${compactRevision} was compacted; re-list and watch from the list's revision + 1`,
          { details: { revision: this.#next, compactRevision } },
        ),
      );
      return;
    }
    this.#retryOrFail(
      fromEtcdError(new Error(res.cancel_reason || 'etcd cancelled the watch'), { revision: this.#next }),
    );
  }

  #onEvents(events: readonly Event[]): void {
    const codec = this.#ctx.codec;
    let batch: WatchEvent[] | undefined;
    let batchRev = 0;
    for (const e of events) {
      if (e.kv === null) continue; // etcd always sends it
      const rev = Number(e.kv.mod_revision);
      if (this.#next !== undefined && rev < this.#next) continue; // already delivered before a reconnect
      if (batch !== undefined && rev !== batchRev)
        this.#queue.push({ type: 'events', revision: batchRev, events: batch });
      if (batch === undefined || rev !== batchRev) {
        batch = [];
        batchRev = rev;
      }
      const kv = codec.kv(e.kv);
      const type = e.type === EventType.DELETE ? 'delete' : 'put';
      batch.push(this.#prevKv && e.prev_kv ? { type, kv, prev: codec.kv(e.prev_kv) } : { type, kv });
    }
    if (batch === undefined) return;
    this.#queue.push({ type: 'events', revision: batchRev, events: batch });
    this.#next = batchRev + 1;
    this.#tryAnswerProgress();
  }

  // ---- progress ----------------------------------------------------------------------------------

  /** Yields the pending progress batch when what was delivered covers its target. */
  #tryAnswerProgress(): boolean {
    const target = this.#progressTarget;
    if (target === undefined || target === null || this.#next === undefined) return false;
    const covered = this.#next - 1;
    if (covered < target) return false;
    this.#progressTarget = undefined;
    clearTimeout(this.#progressTimer);
    this.#queue.push({ type: 'progress', revision: covered });
    return true;
  }

  #sendProgressRequest(): void {
    clearTimeout(this.#progressTimer);
    if (this.#queue.ended || this.#progressTarget === undefined) return;
    if (this.#progressMode === 'request' && this.#stream !== undefined && this.#watchId !== undefined) {
      this.#stream.write({ progress_request: {} });
    }
    // Repeat while unanswered: a request sent while the watcher catches up gets no answer.
    this.#progressTimer = setTimeout(() => this.#sendProgressRequest(), PROGRESS_RESEND_MS);
    this.#progressTimer.unref();
  }

  // ---- ending --------------------------------------------------------------------------------------

  /** Releases the stream, timers and listener once the queue has ended (runs once). */
  #onEnd(): void {
    this.#markStarted();
    clearTimeout(this.#retryTimer);
    clearTimeout(this.#progressTimer);
    this.#offAbort();
    const stream = this.#stream;
    this.#stream = undefined;
    stream?.cancel();
    this.#ctx.onEnd(this);
  }

  /** Ends the watch with `error` (used by the store's close). */
  fail(error: unknown): void {
    this.#queue.fail(error);
  }

  [Symbol.asyncIterator](): AsyncIterator<WatchBatch> {
    return this.#queue;
  }
}
