/**
 * One framed connection between two bus nodes. Either side may call the other and publish to it:
 * requests, responses, publications and heartbeats share the stream (one connection per peer pair).
 *
 * The send queue is the socket's own buffer, bounded by `maxQueueBytes` of unsent bytes: a call that
 * would pass the bound is refused with `MUSTER_OVERLOADED` before anything is written, a publication
 * is dropped (and counted by the caller). A peer that sends nothing for `heartbeatTimeout` is closed
 * with `MUSTER_PEER_LOST`; every call in flight on a closed connection fails at once with it.
 */
import { timingSafeEqual } from 'node:crypto';
import type { Socket } from 'node:net';
import { abortedError, ERROR_CODES, isMusterError, MusterError } from '../errors.js';
import { onAbort } from '../util/abort.js';
import { CallSignal } from './call-signal.js';
import { IdTable } from './id-table.js';
import { encodeFrame, FrameDecoder, HEADER_BYTES, Kind, PROTOCOL_VERSION } from './frame.js';
import type { Caller, ResolvedBusOptions } from './types.js';

/** 64 KiB: the largest hello a stranger may make us buffer. */
const HELLO_LIMIT = 64 * 1024;

export interface Hello {
  readonly v: number;
  readonly node: string;
  readonly address: string;
  readonly token?: string;
  /**
   * 1: this node confirms the publications it receives (a count in its pings). Nodes without it
   * (older versions) never confirm, so their publications are not tracked.
   */
  readonly c?: number;
}

export interface RequestBody {
  readonly s: string;
  readonly m: string;
  readonly a?: unknown;
  readonly p?: string;
  readonly t?: number;
}

export interface PublishBody {
  readonly topic: string;
  readonly id: string;
  readonly m?: unknown;
  /** Wall-clock expiry (ms since the epoch). */
  readonly exp?: number;
}

/** What a serialised error carries. */
export interface ErrorBody {
  readonly code: string;
  readonly message: string;
  readonly retryable?: boolean;
  readonly details?: Record<string, unknown>;
  /** `bus`: the bus refused (unknown method, not owner…); `handler`: the handler threw. */
  readonly origin: 'bus' | 'handler';
}

/** The bus side of a connection. */
export interface ConnectionHost {
  readonly node: string;
  readonly address: string;
  readonly options: ResolvedBusOptions;
  opened(conn: Connection): void;
  request(conn: Connection, id: number, body: RequestBody, call: CallSignal): void;
  publish(conn: Connection, ackId: number, body: PublishBody): void;
  /** Publications written on `conn` that the peer had not confirmed when it closed. */
  unconfirmed(conn: Connection, lost: readonly { topic: string; id: string }[]): void;
  closed(conn: Connection, error: MusterError): void;
}

interface Pending {
  resolve(value: unknown): void;
  reject(err: unknown): void;
  /** Monotonic time at which {@link expire} runs (unless settled first). */
  readonly deadline: number;
  expire(): void;
  cleanup(): void;
}

export type ConnectionState = 'handshake' | 'open' | 'closed';

export class Connection {
  readonly socket: Socket;
  readonly outbound: boolean;
  /** The address this side dialed (outbound connections). */
  readonly dialed: string | undefined;
  /** The peer, once its hello arrived. */
  peer: Hello | undefined;
  /** Resolves when both hellos were exchanged; rejects with the reason the connection closed. */
  readonly ready: Promise<void>;
  readonly #host: ConnectionHost;
  readonly #o: ResolvedBusOptions;
  readonly #decoder: FrameDecoder;
  /** Calls in flight, by id: tables that allocate nothing per call (see id-table.ts). */
  readonly #pending = new IdTable<Pending>();
  readonly #served = new IdTable<CallSignal>();
  readonly #acks = new IdTable<Pending>();
  #state: ConnectionState = 'handshake';
  #nextId = 1;
  #lastReceived: number;
  #lastTick: number;
  #heartbeat: ReturnType<ResolvedBusOptions['clock']['setTimeout']> | undefined;
  #corked = false;
  /**
   * One timer for every call and acknowledgement deadline of this connection, armed for the earliest
   * one (a timer per call put a timer list and a heap operation on every call's path).
   */
  #deadlineTimer: ReturnType<ResolvedBusOptions['clock']['setTimeout']> | undefined;
  #deadlineAt = Infinity;
  /** Publications this side wrote (numbered from 1) and received on this connection. */
  #published = 0;
  #received = 0;
  /**
   * Written publications the peer has not confirmed yet, flat: `seq, topic, id, seq, topic, id…`
   * from `#unconfirmedHead` on (a flat array: no object per publication on the hot path).
   */
  readonly #unconfirmed: (number | string)[] = [];
  #unconfirmedHead = 0;
  #markReady!: () => void;
  #failReady!: (err: unknown) => void;
  /** Why it closed. */
  closeError: MusterError | undefined;
  #caller: Caller | undefined;

  constructor(host: ConnectionHost, socket: Socket, dialed?: string) {
    const outbound = dialed !== undefined;
    this.dialed = dialed;
    this.#host = host;
    this.#o = host.options;
    this.socket = socket;
    this.outbound = outbound;
    this.ready = new Promise<void>((resolve, reject) => {
      this.#markReady = resolve;
      this.#failReady = reject;
    });
    this.ready.catch(() => undefined);
    socket.setNoDelay(true);
    this.#lastReceived = this.#lastTick = this.#o.clock.monotonic();
    this.#decoder = new FrameDecoder(
      {
        frame: (kind, id, body) => this.#onFrame(kind, id, body),
        oversized: (kind, id, length) => this.#onOversized(kind, id, length),
        garbage: (err) => this.close(err),
      },
      HELLO_LIMIT,
    );
    socket.on('data', (chunk: Buffer) => {
      this.#lastReceived = this.#o.clock.monotonic();
      this.#decoder.push(chunk);
    });
    socket.on('error', (err: NodeJS.ErrnoException) => {
      // A TLS alert after the handshake (TLS 1.3: the dialer learns only now that a mutual-TLS
      // peer refused its certificate).
      const tls = typeof err.code === 'string' && err.code.startsWith('ERR_SSL');
      this.close(
        new MusterError(
          tls ? 'MUSTER_TLS_HANDSHAKE' : 'MUSTER_PEER_LOST',
          `connection to ${this.#describe()} failed: ${err.message}`,
          {
            cause: err,
            details: { peer: this.#describe() },
          },
        ),
      );
    });
    socket.on('close', () => {
      this.close(
        new MusterError('MUSTER_PEER_LOST', `connection to ${this.#describe()} closed`, {
          details: { peer: this.#describe() },
        }),
      );
    });
    this.#scheduleHeartbeat(this.#o.connectTimeoutMs, true);
    if (outbound) this.#sendHello();
  }

  /** The peer as a handler sees it (one object per connection, not per call). */
  get caller(): Caller {
    // Frozen: every call on this connection shares it.
    return (this.#caller ??= Object.freeze({
      node: this.peer?.node ?? '?',
      address: this.peer?.address ?? '?',
    }));
  }

  /** The peer's address as this node knows it: the one it dialed, else the one the hello advertised. */
  get address(): string | undefined {
    return this.dialed ?? this.peer?.address;
  }

  get state(): ConnectionState {
    return this.#state;
  }

  /** Calls in flight from this side. */
  get inFlight(): number {
    return this.#pending.size;
  }

  /** Publications written here that the peer has not confirmed receiving yet. */
  get unconfirmed(): number {
    return (this.#unconfirmed.length - this.#unconfirmedHead) / 3;
  }

  /** Unsent bytes. */
  get queuedBytes(): number {
    return this.socket.writableLength;
  }

  /**
   * Sends a call and resolves with its result. Rejects with `MUSTER_FRAME_TOO_LARGE` or
   * `MUSTER_OVERLOADED` (nothing sent, `details.sent: false`), `MUSTER_TIMEOUT`, `MUSTER_ABORTED`,
   * `MUSTER_PEER_LOST`, or the remote's error (see {@link errorFromBody}).
   */
  request(body: RequestBody, timeoutMs: number, signal: AbortSignal | undefined): Promise<unknown> {
    if (this.#state !== 'open') {
      return Promise.reject(
        this.closeError ??
          new MusterError('MUSTER_PEER_LOST', `connection to ${this.#describe()} is not open`, {
            details: { sent: false },
          }),
      );
    }
    if (signal?.aborted) return Promise.reject(abortedError(signal));
    const id = this.#allocateId();
    let frame: Buffer;
    try {
      frame = this.#checkedFrame(Kind.Request, id, body, true);
    } catch (err) {
      // eslint-disable-next-line @typescript-eslint/prefer-promise-reject-errors -- a MusterError
      return Promise.reject(err);
    }
    return new Promise<unknown>((resolve, reject) => {
      const pending: Pending = {
        resolve,
        reject,
        deadline: this.#o.clock.monotonic() + timeoutMs,
        expire: () => {
          pending.cleanup();
          this.#send(encodeFrame(Kind.Cancel, id));
          reject(
            new MusterError(
              'MUSTER_TIMEOUT',
              `${body.s}.${body.m} on ${this.#describe()} did not answer within ${timeoutMs} ms`,
              { details: { service: body.s, method: body.m, peer: this.#describe(), timeoutMs } },
            ),
          );
        },
        cleanup: () => {
          off();
          this.#pending.delete(id);
        },
      };
      const off = onAbort(signal, () => {
        pending.cleanup();
        this.#send(encodeFrame(Kind.Cancel, id));
        reject(abortedError(signal as AbortSignal));
      });
      this.#pending.set(id, pending);
      this.#armDeadline(pending.deadline);
      this.#send(frame);
    });
  }

  /** Answers call `id`. */
  respond(id: number, result: unknown): void {
    if (!this.#served.delete(id) || this.#state !== 'open') return;
    let frame: Buffer;
    try {
      frame = this.#checkedFrame(Kind.Response, id, { r: result }, false);
    } catch (err) {
      this.#send(encodeFrame(Kind.Error, id, bodyOfError(err, 'bus')));
      return;
    }
    this.#send(frame);
  }

  /** Fails call `id` with `err`. */
  fail(id: number, err: unknown, origin: 'bus' | 'handler'): void {
    this.#served.delete(id);
    if (this.#state !== 'open') return;
    this.#send(encodeFrame(Kind.Error, id, bodyOfError(err, origin)));
  }

  /**
   * Queues a publication. Returns `false` (nothing sent) when the connection is not open or the
   * queue is at its bound. With `ack`, resolves `acked` when the subscriber has taken it.
   */
  /**
   * Queues an already-encoded publication frame (the same buffer for every peer: encoded once, never
   * copied per peer). O(1) in the backlog: the socket's write queue is an array push, and
   * `writableLength` a counter. Returns `false` (nothing queued) when not open or at the bound.
   *
   * The publication stays *unconfirmed* until the peer's count of publications received (carried
   * by its heartbeats) covers it; if the connection closes first, `host.unconfirmed` gets it — it
   * may or may not have been delivered, and is never counted as simply sent.
   */
  publishFrame(frame: Buffer, topic: string, id: string): boolean {
    if (this.#state !== 'open') return false;
    if (this.socket.writableLength + frame.length > this.#o.maxQueueBytes) return false;
    this.#send(frame);
    ++this.#published;
    if (this.peer?.c === 1) this.#unconfirmed.push(this.#published, topic, id);
    return true;
  }

  /**
   * Sends a publication that the subscriber acknowledges once its handlers have run (at-least-once).
   * Rejects with `MUSTER_OVERLOADED` (queue full; `details.sent: false`), `MUSTER_TIMEOUT`, or
   * `MUSTER_PEER_LOST`; the caller may send it again — the subscriber delivers an id once.
   */
  publishAcked(body: PublishBody, timeoutMs: number): Promise<void> {
    if (this.#state !== 'open') {
      return Promise.reject(
        new MusterError('MUSTER_PEER_LOST', `connection to ${this.#describe()} is not open`, {
          details: { sent: false },
        }),
      );
    }
    const id = this.#allocateId();
    let frame: Buffer;
    try {
      frame = this.#checkedFrame(Kind.Publish, id, body, true);
    } catch (err) {
      // eslint-disable-next-line @typescript-eslint/prefer-promise-reject-errors -- a MusterError
      return Promise.reject(err);
    }
    return new Promise<void>((resolve, reject) => {
      const pending: Pending = {
        resolve: () => resolve(),
        reject,
        deadline: this.#o.clock.monotonic() + timeoutMs,
        expire: () => {
          pending.cleanup();
          reject(
            new MusterError(
              'MUSTER_TIMEOUT',
              `${this.#describe()} did not acknowledge ${body.id} in ${timeoutMs} ms`,
              {
                details: { peer: this.#describe(), id: body.id },
              },
            ),
          );
        },
        cleanup: () => {
          this.#acks.delete(id);
        },
      };
      this.#acks.set(id, pending);
      this.#armDeadline(pending.deadline);
      this.#send(frame);
      ++this.#published; // numbered like every publication (the peer counts them all)
    });
  }

  /** Closes the connection (idempotent); calls in flight fail with `error`. */
  close(error?: MusterError): void {
    if (this.#state === 'closed') return;
    const wasHandshake = this.#state === 'handshake';
    this.#state = 'closed';
    this.#reportUnconfirmed();
    const err =
      error ??
      new MusterError('MUSTER_PEER_LOST', `connection to ${this.#describe()} closed`, {
        details: { peer: this.#describe() },
      });
    this.closeError = err;
    if (this.#heartbeat !== undefined) this.#o.clock.clearTimeout(this.#heartbeat);
    if (this.#deadlineTimer !== undefined) this.#o.clock.clearTimeout(this.#deadlineTimer);
    this.#deadlineTimer = undefined;
    if (isMusterError(err, 'MUSTER_PROTOCOL') || isMusterError(err, 'MUSTER_PERMISSION_DENIED')) {
      // Tell the peer why, then close once it is written.
      this.socket.end(encodeFrame(Kind.Error, 0, bodyOfError(err, 'bus')));
      this.socket.destroySoon();
      setTimeout(() => this.socket.destroy(), 1000).unref();
    } else if (isMusterError(err, 'MUSTER_CLOSED') && this.#received > 0 && !this.socket.destroyed) {
      // Our own graceful close: confirm what arrived, so the peer does not count it as unconfirmed.
      this.socket.end(encodeFrame(Kind.Ping, 0, { r: this.#received }));
      setTimeout(() => this.socket.destroy(), 1000).unref();
    } else {
      this.socket.destroy();
    }
    for (const p of [...this.#pending.values(), ...this.#acks.values()]) {
      p.cleanup();
      p.reject(err);
    }
    for (const c of this.#served.values()) c.abort(err);
    this.#served.clear();
    if (wasHandshake) this.#failReady(err);
    this.#host.closed(this, err);
  }

  /** Makes sure the deadline timer fires by `deadline`. */
  #armDeadline(deadline: number): void {
    if (deadline >= this.#deadlineAt) return;
    if (this.#deadlineTimer !== undefined) this.#o.clock.clearTimeout(this.#deadlineTimer);
    this.#deadlineAt = deadline;
    this.#deadlineTimer = this.#o.clock.setTimeout(
      () => this.#expireDeadlines(),
      deadline - this.#o.clock.monotonic(),
    );
  }

  /** Expires every call and acknowledgement past its deadline; re-arms for the earliest left. */
  #expireDeadlines(): void {
    this.#deadlineTimer = undefined;
    this.#deadlineAt = Infinity;
    if (this.#state === 'closed') return;
    const now = this.#o.clock.monotonic();
    const expired: Pending[] = [];
    let next = Infinity;
    for (const map of [this.#pending, this.#acks]) {
      for (const p of map.values()) {
        if (p.deadline <= now) expired.push(p);
        else if (p.deadline < next) next = p.deadline;
      }
    }
    for (const p of expired) p.expire();
    if (next !== Infinity) this.#armDeadline(next);
  }

  /** The peer has received publications up to number `count` (on this connection). */
  #confirm(count: number): void {
    const u = this.#unconfirmed;
    let i = this.#unconfirmedHead;
    while (i < u.length && (u[i] as number) <= count) i += 3;
    if (i >= u.length) {
      u.length = 0;
      this.#unconfirmedHead = 0;
    } else if (i > 3 * 1024 && i * 2 > u.length) {
      u.splice(0, i);
      this.#unconfirmedHead = 0;
    } else this.#unconfirmedHead = i;
  }

  #reportUnconfirmed(): void {
    const u = this.#unconfirmed;
    if (u.length === this.#unconfirmedHead) return;
    const lost: { topic: string; id: string }[] = [];
    for (let i = this.#unconfirmedHead; i < u.length; i += 3)
      lost.push({ topic: u[i + 1] as string, id: u[i + 2] as string });
    u.length = 0;
    this.#unconfirmedHead = 0;
    this.#host.unconfirmed(this, lost);
  }

  #allocateId(): number {
    const id = this.#nextId;
    this.#nextId = this.#nextId >= 0xffffffff ? 1 : this.#nextId + 1;
    return id;
  }

  #checkedFrame(kind: Kind, id: number, body: unknown, checkQueue: boolean): Buffer {
    const frame = checkedFrame(kind, id, body, this.#o.maxFrameBytes);
    if (checkQueue && this.socket.writableLength + frame.length > this.#o.maxQueueBytes) {
      throw new MusterError(
        'MUSTER_OVERLOADED',
        `the send queue to ${this.#describe()} holds ${this.socket.writableLength} unsent bytes (limit ${this.#o.maxQueueBytes}): the peer is not reading`,
        { details: { peer: this.#describe(), queuedBytes: this.socket.writableLength, sent: false } },
      );
    }
    return frame;
  }

  /**
   * Writes issued in one tick are corked and go out together: one `writev` per connection. One
   * `process.nextTick` uncorks every connection written to in the tick (a publication to 20
   * subscribers queued 20 ticks, each with its closure, before).
   */
  #send(frame: Buffer): void {
    if (this.socket.destroyed) return;
    if (!this.#corked) {
      this.#corked = true;
      this.socket.cork();
      Connection.#toUncork[Connection.#uncorkCount++] = this;
      if (Connection.#uncorkCount === 1) process.nextTick(Connection.#uncorkAll);
    }
    this.socket.write(frame);
  }

  static readonly #toUncork: (Connection | undefined)[] = [];
  static #uncorkCount = 0;

  static #uncorkAll(this: void): void {
    const list = Connection.#toUncork;
    // Read the count on every turn: an uncork that writes elsewhere at once lands in this loop.
    for (let i = 0; i < Connection.#uncorkCount; i++) {
      const conn = list[i] as Connection;
      list[i] = undefined;
      conn.#corked = false;
      conn.socket.uncork();
    }
    Connection.#uncorkCount = 0;
  }

  #sendHello(): void {
    const hello: Hello = {
      v: PROTOCOL_VERSION,
      node: this.#host.node,
      address: this.#host.address,
      ...(this.#o.token === undefined ? {} : { token: this.#o.token }),
      c: 1,
    };
    this.#send(encodeFrame(Kind.Hello, 0, hello));
  }

  #onFrame(kind: Kind, id: number, body: unknown): void {
    if (this.#state === 'closed') return;
    if (this.#state === 'handshake') {
      if (kind === Kind.Error && id === 0) {
        this.close(errorFromBody(body, this.#describe()));
        return;
      }
      if (kind !== Kind.Hello) {
        this.close(new MusterError('MUSTER_PROTOCOL', `expected a hello, got a frame of kind ${kind}`));
        return;
      }
      this.#onHello(body);
      return;
    }
    switch (kind) {
      case Kind.Request: {
        const b = body as RequestBody | undefined;
        if (b === undefined || typeof b.s !== 'string' || typeof b.m !== 'string') {
          this.close(new MusterError('MUSTER_PROTOCOL', 'a request without service and method'));
          return;
        }
        if (id === 0) {
          this.close(new MusterError('MUSTER_PROTOCOL', 'a request with call id 0'));
          return;
        }
        const call = new CallSignal();
        this.#served.set(id, call);
        this.#host.request(this, id, b, call);
        return;
      }
      case Kind.Response: {
        const p = this.#pending.get(id);
        if (p === undefined) return;
        p.cleanup();
        p.resolve((body as { r?: unknown } | undefined)?.r);
        return;
      }
      case Kind.Error: {
        if (id === 0) {
          this.close(errorFromBody(body, this.#describe()));
          return;
        }
        const p = this.#pending.get(id);
        if (p === undefined) return;
        p.cleanup();
        p.reject(errorFromBody(body, this.#describe()));
        return;
      }
      case Kind.Cancel: {
        const c = this.#served.get(id);
        this.#served.delete(id);
        c?.abort(new MusterError('MUSTER_ABORTED', 'the caller gave up'));
        return;
      }
      case Kind.Publish: {
        this.#received++;
        const b = body as PublishBody | undefined;
        if (b === undefined || typeof b.topic !== 'string' || typeof b.id !== 'string') {
          this.close(new MusterError('MUSTER_PROTOCOL', 'a publication without topic and id'));
          return;
        }
        this.#host.publish(this, id, b);
        return;
      }
      case Kind.Ack: {
        const p = this.#acks.get(id);
        p?.cleanup();
        p?.resolve(undefined);
        return;
      }
      case Kind.Ping: {
        const r = (body as { r?: unknown } | undefined)?.r;
        if (typeof r === 'number') this.#confirm(r);
        return;
      }
      case Kind.Hello:
        this.close(new MusterError('MUSTER_PROTOCOL', 'a second hello'));
        return;
    }
  }

  #onHello(body: unknown): void {
    const h = body as Partial<Hello> | undefined;
    if (
      h === undefined ||
      h === null ||
      typeof h !== 'object' ||
      h.v !== PROTOCOL_VERSION ||
      typeof h.node !== 'string' ||
      typeof h.address !== 'string'
    ) {
      this.close(
        new MusterError(
          'MUSTER_PROTOCOL',
          `a malformed hello (protocol version ${PROTOCOL_VERSION} expected)`,
        ),
      );
      return;
    }
    if (!sameToken(this.#o.token, h.token)) {
      this.close(
        new MusterError(
          'MUSTER_PERMISSION_DENIED',
          `bus peer ${h.node} (${h.address}) presented ${h.token === undefined ? 'no' : 'a wrong'} token`,
          { details: { peer: h.address } },
        ),
      );
      return;
    }
    this.peer = { v: h.v, node: h.node, address: h.address, ...(h.c === 1 ? { c: 1 } : {}) };
    if (!this.outbound) this.#sendHello();
    this.#state = 'open';
    this.#decoder.setLimit(this.#o.maxFrameBytes);
    this.#scheduleHeartbeat(this.#o.heartbeatIntervalMs, false);
    this.#markReady();
    this.#host.opened(this);
  }

  #onOversized(kind: number, id: number, length: number): void {
    if (this.#state !== 'open') {
      // A TLS ClientHello (0x16 0x03 …) read as a header: a TLS peer dialed this plain node.
      this.close(
        length >>> 24 === 0x16
          ? new MusterError('MUSTER_TLS_HANDSHAKE', 'a TLS peer dialed this node, which has no tls options')
          : new MusterError('MUSTER_PROTOCOL', `a ${length}-byte first frame: not a bus peer`),
      );
      return;
    }
    const err = new MusterError(
      'MUSTER_FRAME_TOO_LARGE',
      `a ${length}-byte frame from ${this.#describe()} is over this node's ${this.#o.maxFrameBytes}-byte limit; it was skipped`,
      { details: { bytes: length, limit: this.#o.maxFrameBytes } },
    );
    if (kind === Kind.Request) {
      this.#send(encodeFrame(Kind.Error, id, bodyOfError(err, 'bus')));
    } else if (kind === Kind.Publish) {
      this.#received++;
    } else if (kind === Kind.Response || kind === Kind.Error) {
      const p = this.#pending.get(id);
      p?.cleanup();
      p?.reject(err);
    }
    this.#host.options.logger.warn({ code: err.code, peer: this.#describe(), bytes: length }, err.message);
  }

  /** One timer does both: send a heartbeat and check the peer's. */
  #scheduleHeartbeat(ms: number, handshake: boolean): void {
    if (this.#heartbeat !== undefined) this.#o.clock.clearTimeout(this.#heartbeat);
    this.#heartbeat = this.#o.clock.setTimeout(() => {
      this.#heartbeat = undefined;
      if (this.#state === 'closed') return;
      if (handshake) {
        if (this.#state === 'handshake') {
          this.close(
            new MusterError(
              'MUSTER_PEER_LOST',
              `no hello from ${this.#describe()} within ${this.#o.connectTimeoutMs} ms`,
              { details: { peer: this.#describe(), sent: false } },
            ),
          );
        }
        return;
      }
      const now = this.#o.clock.monotonic();
      // If this process itself was stalled (GC, a blocked loop, SIGSTOP), the peer's bytes may be
      // waiting unread: judge silence only after a tick that came on time.
      const stalled = now - this.#lastTick > this.#o.heartbeatTimeoutMs / 2;
      this.#lastTick = now;
      if (!stalled && now - this.#lastReceived > this.#o.heartbeatTimeoutMs) {
        this.close(
          new MusterError(
            'MUSTER_PEER_LOST',
            `${this.#describe()} sent nothing for ${Math.round(now - this.#lastReceived)} ms (heartbeat timeout ${this.#o.heartbeatTimeoutMs} ms)`,
            { details: { peer: this.#describe(), silentMs: Math.round(now - this.#lastReceived) } },
          ),
        );
        return;
      }
      // The ping carries how many publications arrived here, so the peer knows which are delivered.
      this.#send(encodeFrame(Kind.Ping, 0, this.#received === 0 ? undefined : { r: this.#received }));
      this.#scheduleHeartbeat(this.#o.heartbeatIntervalMs, false);
    }, ms);
  }

  #describe(): string {
    if (this.peer !== undefined) return `${this.peer.node} (${this.peer.address})`;
    return `${this.socket.remoteAddress ?? '?'}:${this.socket.remotePort ?? '?'}`;
  }

  /** Acknowledges publication `ackId`. */
  ack(ackId: number): void {
    if (ackId !== 0 && this.#state === 'open') this.#send(encodeFrame(Kind.Ack, ackId));
  }
}

/**
 * Encodes a frame, or throws `MUSTER_INVALID_ARGUMENT` (not JSON) / `MUSTER_FRAME_TOO_LARGE` (over
 * `maxFrameBytes`), both with `details.sent: false`.
 */
export function checkedFrame(kind: Kind, id: number, body: unknown, maxFrameBytes: number): Buffer {
  let frame: Buffer;
  try {
    frame = encodeFrame(kind, id, body);
  } catch (err) {
    throw new MusterError(
      'MUSTER_INVALID_ARGUMENT',
      `a bus message must be JSON-serialisable: ${(err as Error).message}`,
      { cause: err, details: { sent: false } },
    );
  }
  if (frame.length - HEADER_BYTES > maxFrameBytes) {
    throw new MusterError(
      'MUSTER_FRAME_TOO_LARGE',
      `the message encodes to ${frame.length - HEADER_BYTES} bytes, over the ${maxFrameBytes}-byte frame limit`,
      { details: { bytes: frame.length - HEADER_BYTES, limit: maxFrameBytes, sent: false } },
    );
  }
  return frame;
}

function sameToken(mine: string | undefined, theirs: string | undefined): boolean {
  if (mine === undefined) return true;
  if (typeof theirs !== 'string') return false;
  const a = Buffer.from(mine);
  const b = Buffer.from(theirs);
  return a.length === b.length && timingSafeEqual(a, b);
}

/** Serialises an error for the wire. */
export function bodyOfError(err: unknown, origin: 'bus' | 'handler'): ErrorBody {
  const e = err as { code?: unknown; message?: unknown; retryable?: unknown; details?: unknown };
  const code = typeof e?.code === 'string' ? e.code : 'MUSTER_INTERNAL';
  const message = typeof e?.message === 'string' ? e.message : String(err);
  let details: Record<string, unknown> | undefined;
  if (e?.details !== null && typeof e?.details === 'object') {
    try {
      details = JSON.parse(JSON.stringify(e.details)) as Record<string, unknown>;
    } catch {
      details = undefined;
    }
  }
  return {
    code,
    message,
    ...(typeof e?.retryable === 'boolean' ? { retryable: e.retryable } : {}),
    ...(details === undefined ? {} : { details }),
    origin,
  };
}

/** The error a caller sees for an error frame: the bus's own code, or `MUSTER_REMOTE` for a handler's. */
export function errorFromBody(body: unknown, peer: string): MusterError {
  const b = (body ?? {}) as Partial<ErrorBody>;
  const code = typeof b.code === 'string' ? b.code : 'MUSTER_INTERNAL';
  const message = typeof b.message === 'string' ? b.message : 'unknown error';
  if (b.origin === 'bus' && Object.hasOwn(ERROR_CODES, code)) {
    return new MusterError(code as never, message, {
      ...(typeof b.retryable === 'boolean' ? { retryable: b.retryable } : {}),
      details: { ...(b.details ?? {}), peer },
    });
  }
  return new MusterError('MUSTER_REMOTE', `${peer}: ${code}: ${message}`, {
    retryable: b.retryable === true,
    details: { remote: { code, message, details: b.details ?? {} }, peer },
  });
}
