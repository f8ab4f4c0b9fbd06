/**
 * Lease renewals over etcd's LeaseKeepAlive streams, failing over between members within one renewal.
 *
 * etcd renews leases only through a bidirectional stream. A renewal first goes out on one stream
 * shared by the store (answers come back in request order: etcd serves a stream's requests one at a
 * time). If that attempt is not answered within {@link KEEPALIVE_HEDGE_MS}, or fails, the same
 * renewal is sent again on a fresh one-request stream to another member; the first answer wins. Why:
 * when the leader dies, a follower holding a renewal keeps it while it forwards to the dead leader,
 * then re-checks for a new leader only once per election timeout (1 s), and every later request on
 * that stream queues behind it — a 3 s session waited there past its deadline although the new
 * leader had been answering for a second (docs/store.md, "Leases"). A fresh request to a member that
 * knows the new leader is forwarded at once.
 *
 * A renewal ends with the first acknowledgement; with `MUSTER_LEASE_NOT_FOUND` as soon as any member
 * answers TTL 0 (nothing here re-grants a lease); with the last error once every attempt it may make
 * has failed; with `MUSTER_TIMEOUT` at its deadline (the shared stream is then torn down, as it may
 * be black-holed); or with `MUSTER_ABORTED`. An answer to an abandoned request on the shared stream is
 * consumed and dropped, never credited to a later renewal of the same lease: it renewed the lease at
 * an earlier time than the later request was sent.
 */
import type { GrpcStream } from './grpc.js';
import type { LeaseIdRequest, LeaseKeepAliveResponse } from './rpc-codec.js';
import { abortedError, isMusterError, MusterError } from '../../errors.js';
import { onAbort } from '../../util/abort.js';
import { fromEtcdError } from './errors.js';

export type KeepAliveStream = GrpcStream<LeaseIdRequest, LeaseKeepAliveResponse>;

/** A LeaseKeepAlive stream and the member (`host:port`) it was opened on. */
export interface OpenedKeepAliveStream {
  readonly stream: KeepAliveStream;
  readonly endpoint: string;
}

/** Opens a LeaseKeepAlive stream, on `prefer` when it is given and usable, else on any member. */
export type OpenKeepAliveStream = (prefer: string | undefined) => Promise<OpenedKeepAliveStream>;

/**
 * 250 ms: a renewal unanswered this long is sent again to another member. A live member answers in
 * about a millisecond (tens under heavy load); a 3 s session renews every second and keeps 2.9 s of
 * validity, so it can try every member several times before its deadline. A hedge costs one
 * short-lived stream, and only while something is wrong.
 */
export const KEEPALIVE_HEDGE_MS = 250;

/**
 * What renewals waiting on the shared stream get when the engine itself tears it down (another member
 * answered first, or a renewal timed out on it): they ask another member at once.
 */
const STREAM_REPLACED = new MusterError(
  'MUSTER_UNAVAILABLE',
  'the etcd keep-alive stream was replaced (another member answered first, or a renewal timed out on it)',
);

type Outcome = { readonly ttl: number } | { readonly error: unknown };

interface Queued {
  readonly id: string;
  readonly sentAt: number;
  /** Cleared when the renewal no longer waits for this answer; the answer is then dropped. */
  deliver: ((outcome: Outcome) => void) | undefined;
}

/** The store's shared stream: renewal requests and their answers, matched in order. */
class SharedStream {
  readonly opened: Promise<OpenedKeepAliveStream>;
  endpoint: string | undefined;
  readonly #queue: Queued[] = [];
  #ended = false;

  constructor(open: Promise<OpenedKeepAliveStream>, onEnd: (s: SharedStream) => void) {
    this.opened = open.then(
      (o) => {
        this.endpoint = o.endpoint;
        o.stream.on('data', (res) => this.#onData(res));
        o.stream.on('error', (err: unknown) => {
          onEnd(this);
          this.fail(err);
        });
        o.stream.on('end', () => {
          onEnd(this);
          this.fail(new MusterError('MUSTER_UNAVAILABLE', 'the etcd keep-alive stream ended'));
        });
        return o;
      },
      (err: unknown) => {
        onEnd(this);
        this.fail(err);
        throw err;
      },
    );
    this.opened.catch(() => undefined);
  }

  /** Sends a renewal of `id`; returns a function that abandons it (its answer is then dropped). */
  send(id: string, deliver: (outcome: Outcome) => void): () => void {
    const entry: Queued = { id, sentAt: performance.now(), deliver };
    if (this.#ended) {
      queueMicrotask(() =>
        deliver({ error: new MusterError('MUSTER_UNAVAILABLE', 'keep-alive stream closed') }),
      );
      return () => undefined;
    }
    this.#queue.push(entry);
    this.opened.then(
      (o) => {
        if (!this.#ended) o.stream.write({ ID: id });
      },
      () => undefined, // fail() answered every queued entry
    );
    return () => {
      entry.deliver = undefined;
    };
  }

  /** How long its oldest request has waited for an answer (0 when none waits). */
  stalledMs(): number {
    const oldest = this.#queue[0];
    return oldest === undefined ? 0 : performance.now() - oldest.sentAt;
  }

  #onData(res: LeaseKeepAliveResponse): void {
    const entry = this.#queue.shift();
    if (entry === undefined || entry.id !== String(res.ID)) {
      // Not the answer to the oldest request: the pairing can no longer be trusted.
      this.fail(new MusterError('MUSTER_UNAVAILABLE', 'the etcd keep-alive stream answered out of order'));
      this.cancel();
      return;
    }
    entry.deliver?.({ ttl: Number(res.TTL) });
  }

  /** Answers every waiting request with `err`; later sends fail at once. */
  fail(err: unknown): void {
    if (this.#ended) return;
    this.#ended = true;
    for (const entry of this.#queue.splice(0)) entry.deliver?.({ error: err });
  }

  cancel(): void {
    this.opened.then(
      (o) => o.stream.cancel(),
      () => undefined,
    );
  }
}

export class KeepAliveChannel {
  readonly #open: OpenKeepAliveStream;
  readonly #endpoints: readonly string[];
  readonly #hedgeMs: number;
  #shared: SharedStream | undefined;
  /** The member that answered last: the shared stream is re-opened there. */
  #preferred: string | undefined;
  /** Rotates the members that hedged attempts go to. */
  #next = 0;
  readonly #oneShots = new Set<Promise<OpenedKeepAliveStream>>();
  /** Ends each renewal in progress with `MUSTER_CLOSED` (on close). */
  readonly #inflight = new Set<() => void>();
  #closed = false;

  constructor(open: OpenKeepAliveStream, endpoints: readonly string[], hedgeMs = KEEPALIVE_HEDGE_MS) {
    this.#open = open;
    this.#endpoints = endpoints;
    this.#hedgeMs = hedgeMs;
  }

  /**
   * Renews lease `id` once; resolves to the TTL etcd renewed it for. Rejects with
   * `MUSTER_LEASE_NOT_FOUND`, `MUSTER_TIMEOUT` after `timeoutMs` (with several members, failed
   * attempts are retried until then), `MUSTER_UNAVAILABLE` (a single member failed), `MUSTER_CLOSED`,
   * or `MUSTER_ABORTED`.
   */
  renew(id: string, timeoutMs: number, signal?: AbortSignal): Promise<number> {
    if (this.#closed) return Promise.reject(closedError());
    if (signal?.aborted) return Promise.reject(abortedError(signal));
    return new Promise<number>((resolve, reject) => {
      /** This renewal's one-request streams, one per member at most: cancelling one drops it. */
      const oneShots = new Map<string, () => void>();
      /** When each member last failed an attempt of this renewal (it is skipped for a hedge period). */
      const failedAt = new Map<string, number>();
      let shared: { readonly stream: SharedStream; readonly stop: () => void; member?: string } | undefined;
      let lastError: unknown;
      let settled = false;
      let hedgeTimer: NodeJS.Timeout | undefined;

      const finish = (outcome: Outcome): void => {
        if (settled) return;
        settled = true;
        clearTimeout(hedgeTimer);
        clearTimeout(deadline);
        offAbort();
        this.#inflight.delete(onClose);
        shared?.stop();
        for (const stop of oneShots.values()) stop();
        oneShots.clear();
        if ('ttl' in outcome) resolve(outcome.ttl);
        // eslint-disable-next-line @typescript-eslint/prefer-promise-reject-errors
        else reject(outcome.error);
      };
      const usable = (member: string): boolean =>
        performance.now() - (failedAt.get(member) ?? -Infinity) >= this.#hedgeMs;
      const onOutcome = (member: string | undefined, viaShared: boolean, outcome: Outcome): void => {
        if (settled) return;
        if ('ttl' in outcome) {
          if (outcome.ttl <= 0) return finish({ error: notFound(id) });
          if (member !== undefined) this.#preferred = member;
          const beaten = viaShared ? undefined : shared?.stream;
          finish(outcome);
          // A fresh stream beat the shared one: replace it, so renewals stop queueing there.
          if (beaten !== undefined) this.#dropShared(beaten);
          return;
        }
        const err = fromEtcdError(outcome.error, { lease: id });
        if (isMusterError(err, 'MUSTER_LEASE_NOT_FOUND') || isMusterError(err, 'MUSTER_CLOSED'))
          return finish({ error: err });
        lastError = err;
        if (viaShared) shared = undefined;
        if (member !== undefined && outcome.error !== STREAM_REPLACED)
          failedAt.set(member, performance.now());
        // Another member may answer: ask it at once. A single member that failed: nowhere else to
        // ask, the caller decides. With several, the hedge asks again (a leader may be elected any
        // moment; the caller's deadline or ours ends the renewal).
        if (this.#endpoints.some(usable)) launch();
        else if (this.#endpoints.length === 1 && shared === undefined && oneShots.size === 0)
          finish({ error: err });
      };
      /**
       * The first call sends on the shared stream; later ones send a fresh request to the next
       * member in rotation that has not just failed, replacing this renewal's older request there
       * (a member that lost its leader answers a request it holds only after polling for a new one,
       * but forwards a fresh request at once). Re-arms the hedge.
       */
      const launch = (): void => {
        if (settled || this.#closed) return;
        clearTimeout(hedgeTimer);
        hedgeTimer = setTimeout(launch, this.#hedgeMs);
        if (!launched) {
          launched = true;
          const stream = this.#sharedStream();
          const attempt: NonNullable<typeof shared> = {
            stream,
            stop: stream.send(id, (o) => onOutcome(attempt.member, true, o)),
          };
          if (stream.endpoint !== undefined) attempt.member = stream.endpoint;
          else
            void stream.opened.then(
              (o) => (attempt.member = o.endpoint),
              () => undefined,
            );
          shared = attempt;
          // Requests already wait on the shared stream: do not wait a hedge period behind them.
          if (stream.stalledMs() < this.#hedgeMs) return;
        }
        const holds = (m: string): boolean => oneShots.has(m) || shared?.member === m;
        // A member without a request of this renewal first; else refresh the oldest-asked one.
        const member = this.#rotate((m) => usable(m) && !holds(m)) ?? this.#rotate(usable);
        if (member === undefined) return;
        oneShots.get(member)?.();
        const stop = this.#oneShot(id, member, (o) => {
          if (oneShots.get(member) === stop) oneShots.delete(member);
          onOutcome(member, false, o);
        });
        oneShots.set(member, stop);
      };
      let launched = false;
      const deadline = setTimeout(() => {
        const stalled = shared?.stream;
        finish({
          error: new MusterError(
            'MUSTER_TIMEOUT',
            `etcd did not answer the keep-alive of lease ${id} within ${timeoutMs} ms`,
            { details: { lease: id }, ...(lastError === undefined ? {} : { cause: lastError }) },
          ),
        });
        // A shared stream that never answered may sit on a black-holed connection: replace it.
        if (stalled !== undefined) this.#dropShared(stalled);
      }, timeoutMs);
      const onClose = (): void => finish({ error: closedError() });
      this.#inflight.add(onClose);
      const offAbort = onAbort(signal, () => finish({ error: abortedError(signal as AbortSignal) }));
      launch();
    });
  }

  /** The next member in rotation that `ok` accepts (hedges spread over the members). */
  #rotate(ok: (member: string) => boolean): string | undefined {
    const n = this.#endpoints.length;
    for (let i = 0; i < n; i++) {
      const j = (this.#next + i) % n;
      const member = this.#endpoints[j] as string;
      if (ok(member)) {
        this.#next = (j + 1) % n;
        return member;
      }
    }
    return undefined;
  }

  #sharedStream(): SharedStream {
    if (this.#shared !== undefined) return this.#shared;
    const stream = new SharedStream(this.#open(this.#preferred), (s) => {
      if (this.#shared === s) this.#shared = undefined;
    });
    this.#shared = stream;
    return stream;
  }

  #dropShared(stream: SharedStream): void {
    if (this.#shared === stream) this.#shared = undefined;
    stream.fail(STREAM_REPLACED);
    stream.cancel();
  }

  /** One renewal on a stream of its own, closed after the answer. Returns a function that cancels it. */
  #oneShot(id: string, prefer: string | undefined, deliver: (outcome: Outcome) => void): () => void {
    let done = false;
    const settle = (outcome: Outcome): void => {
      if (done) return;
      done = true;
      stop();
      deliver(outcome);
    };
    const opening = this.#open(prefer);
    this.#oneShots.add(opening);
    const stop = (): void => {
      done = true;
      this.#oneShots.delete(opening);
      opening.then(
        (o) => o.stream.cancel(),
        () => undefined,
      );
    };
    opening.then(
      (o) => {
        if (done) return;
        o.stream.on('data', (res) => settle({ ttl: Number(res.TTL) }));
        o.stream.on('error', (err: unknown) => settle({ error: err }));
        o.stream.on('end', () =>
          settle({ error: new MusterError('MUSTER_UNAVAILABLE', 'the etcd keep-alive stream ended') }),
        );
        o.stream.write({ ID: id });
      },
      (err: unknown) => settle({ error: err }),
    );
    return stop;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const end of [...this.#inflight]) end();
    const shared = this.#shared;
    this.#shared = undefined;
    shared?.fail(closedError());
    shared?.cancel();
    for (const opening of this.#oneShots) {
      opening.then(
        (o) => o.stream.cancel(),
        () => undefined,
      );
    }
    this.#oneShots.clear();
  }
}

function closedError(): MusterError {
  return new MusterError('MUSTER_CLOSED', 'the etcd store was closed');
}

function notFound(id: string): MusterError {
  return new MusterError(
    'MUSTER_LEASE_NOT_FOUND',
    `lease ${id} does not exist (expired, revoked or never granted)`,
    {
      details: { lease: id },
    },
  );
}
