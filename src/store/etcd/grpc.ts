/**
 * A gRPC client on `node:http2`: one HTTP/2 session per etcd member, unary calls and bidirectional
 * streams, no code generation and no reflection (the codecs are in rpc-codec.ts).
 *
 * Unary calls carry their deadline (`grpc-timeout`) and are cancelled with RST_STREAM CANCEL when
 * the deadline passes or their AbortSignal fires. Status comes from the trailers, or from the headers
 * of a trailers-only response (`grpc-status`, percent-decoded `grpc-message`). A session that
 * received GOAWAY takes no new calls (they open a new session; the old one finishes its streams). A
 * session with calls or streams open is pinged every {@link GrpcChannelOptions.keepAliveMs}; a ping
 * unanswered within {@link GrpcChannelOptions.keepAliveTimeoutMs} destroys it, failing its calls
 * with UNAVAILABLE, so a dead member is noticed even when no request is pending on a stream. An
 * idle session is never pinged (etcd counts such pings as abuse) and does not keep the process alive.
 *
 * A connection attempt that ends before the server's HTTP/2 SETTINGS arrived (refused, reset, or
 * given no answer within {@link GrpcChannelOptions.connectTimeoutMs}, after which it is destroyed)
 * puts the channel in back-off ({@link RECONNECT_BACKOFF}): until it passes, calls fail at once with
 * UNAVAILABLE, never sent, instead of dialling again; the first attempt after a connection that
 * worked is immediate (see {@link ChannelState}).
 */
import { EventEmitter } from 'node:events';
import {
  type ClientHttp2Session,
  type ClientHttp2Stream,
  connect,
  constants,
  type IncomingHttpHeaders,
  type IncomingHttpStatusHeader,
  type SecureClientSessionOptions,
} from 'node:http2';
import { onAbort } from '../../util/abort.js';
import { GRPC_PREFIX } from '../../util/protobuf.js';
import { backoffDelay, type ResolvedBackoff } from '../watched.js';

/** gRPC status codes used here. */
export const Status = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  DEADLINE_EXCEEDED: 4,
  RESOURCE_EXHAUSTED: 8,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  UNAUTHENTICATED: 16,
} as const;

const STATUS_NAMES = [
  'OK',
  'CANCELLED',
  'UNKNOWN',
  'INVALID_ARGUMENT',
  'DEADLINE_EXCEEDED',
  'NOT_FOUND',
  'ALREADY_EXISTS',
  'PERMISSION_DENIED',
  'RESOURCE_EXHAUSTED',
  'FAILED_PRECONDITION',
  'ABORTED',
  'OUT_OF_RANGE',
  'UNIMPLEMENTED',
  'INTERNAL',
  'UNAVAILABLE',
  'DATA_LOSS',
  'UNAUTHENTICATED',
];

/**
 * 4 MiB: the largest message accepted from a server, as grpc-js's default (the client this one
 * replaced), so a range too large to hold fails the same way (`RESOURCE_EXHAUSTED`,
 * `MUSTER_VALUE_TOO_LARGE`) instead of growing the heap without bound.
 */
export const MAX_RECEIVE_MESSAGE_BYTES = 4 * 1024 * 1024;
/**
 * 1 MiB HTTP/2 receive window per stream and per session: a 1.5 MiB value (etcd's default request
 * limit) arrives in two window round trips instead of 24 with HTTP/2's 64 KiB default. The window is
 * credit, not memory: nothing is allocated until the server sends.
 */
export const RECEIVE_WINDOW_BYTES = 1024 * 1024;

/**
 * Reconnect back-off of one member: 100 ms after the first failed connection attempt, doubling to
 * 2 s, each delay shortened at random by up to 20 % (so clients that lost a member together do not
 * dial it in lock-step). gRPC's own defaults are 1 s → 120 s; a member restart takes about a second
 * and a single-member store waits out the current delay after its etcd returns, so the cap stays
 * short (the watch's own back-off caps at 1 s). The delay starts again from 100 ms once a connection
 * completes its HTTP/2 handshake.
 */
export const RECONNECT_BACKOFF: ResolvedBackoff = { initialMs: 100, maxMs: 2000, jitter: 0.2 };

/**
 * 2 s: how long a connection attempt may go without the server's HTTP/2 SETTINGS before it is
 * destroyed and counted as failed (etcdctl's `--dial-timeout` default). A SYN black-holed or a
 * frozen etcd (TCP accepted, nothing sent) would otherwise keep the channel `connecting` until the
 * OS gives up (minutes). A live member answers within a few round trips (TLS included); 2 s leaves
 * a default 5 s request time to be retried on another member. gRPC's own minimum is 20 s.
 */
export const CONNECT_TIMEOUT_MS = 2000;

/** A failed call: its gRPC status `code` and the server's (decoded) message. */
export class GrpcError extends Error {
  readonly code: number;
  readonly details: string;
  /** True when the request certainly never reached a server (so repeating a write is safe). */
  readonly neverSent: boolean;

  constructor(code: number, details: string, options: { neverSent?: boolean; cause?: unknown } = {}) {
    super(
      `${code} ${STATUS_NAMES[code] ?? 'UNKNOWN'}: ${details}`,
      options.cause === undefined ? {} : { cause: options.cause },
    );
    this.name = 'GrpcError';
    this.code = code;
    this.details = details;
    this.neverSent = options.neverSent === true;
  }
}

/** A call on a closed client or channel: nothing was sent. */
export class ClosedError extends GrpcError {
  constructor(what: string) {
    super(Status.CANCELLED, `the ${what} was closed`, { neverSent: true });
    this.name = 'ClosedError';
  }
}

/** How to reach one member. */
export interface GrpcChannelOptions {
  /** `host:port`. */
  readonly endpoint: string;
  /** TLS (`etcds://`): the CA bundle (default: the system roots) and the client certificate. */
  readonly tls?: { readonly ca?: Buffer; readonly cert?: Buffer; readonly key?: Buffer } | undefined;
  /** Ping interval while calls are open. */
  readonly keepAliveMs: number;
  /** How long a ping may go unanswered before the session is destroyed. */
  readonly keepAliveTimeoutMs: number;
  /** Reconnect back-off. Default: {@link RECONNECT_BACKOFF}. */
  readonly reconnect?: ResolvedBackoff | undefined;
  /**
   * How long an attempt may wait for the server's SETTINGS before it is destroyed (a failed attempt:
   * its calls fail with UNAVAILABLE and the channel backs off); 0: no limit. Default:
   * {@link CONNECT_TIMEOUT_MS}.
   */
  readonly connectTimeoutMs?: number | undefined;
  /** Random numbers in [0, 1) for the jitter. Default: `Math.random`. */
  readonly random?: (() => number) | undefined;
}

/**
 * A channel's state: `idle` (no session: the next call dials), `connecting` (dialled, no SETTINGS
 * from the server yet), `ready` (handshake done), `backing-off` (the last attempt failed; calls fail
 * at once until {@link GrpcChannel.retryAt}, then it is `idle`), `closed`.
 *
 * ```
 *  idle ──call──▶ connecting ──SETTINGS──▶ ready ──session ends──▶ idle
 *   ▲                 │ ends before SETTINGS, or none within the connect timeout
 *   └─delay passes── backing-off ◀┘
 * ```
 */
export type ChannelState = 'idle' | 'connecting' | 'ready' | 'backing-off' | 'closed';

/** A call refused because the channel is backing off after failed connection attempts: never sent. */
export class BackoffError extends GrpcError {
  constructor(endpoint: string, attempts: number, waitMs: number, cause: unknown) {
    super(
      Status.UNAVAILABLE,
      `No connection established: ${endpoint} failed ${attempts} connection attempt(s) in a row${cause instanceof Error ? ` (last: ${cause.message})` : ''}; next attempt in ${Math.ceil(waitMs)} ms`,
      { neverSent: true, ...(cause === undefined ? {} : { cause }) },
    );
    this.name = 'BackoffError';
  }
}

/** Request metadata (lower-case ASCII header names). */
export type Metadata = Readonly<Record<string, string>>;

/** A unary call's options. */
export interface CallOptions {
  /** Epoch milliseconds. */
  readonly deadline: number;
  readonly signal?: AbortSignal | undefined;
  readonly metadata?: Metadata | undefined;
}

/** Splits a byte stream into gRPC messages (uncompressed only: this client never asks for compression). */
class MessageReader {
  #chunks: Buffer[] = [];
  #have = 0;
  #need = -1;

  /** Adds `chunk`; returns the messages it completes, or throws a {@link GrpcError}. */
  push(chunk: Buffer, emit: (message: Buffer) => void): void {
    this.#chunks.push(chunk);
    this.#have += chunk.length;
    for (;;) {
      if (this.#need < 0) {
        if (this.#have < GRPC_PREFIX) return;
        const head = this.#take(GRPC_PREFIX);
        if (head[0] !== 0)
          throw new GrpcError(
            Status.INTERNAL,
            'the server sent a compressed message, which was not asked for',
          );
        this.#need = head.readUInt32BE(1);
        if (this.#need > MAX_RECEIVE_MESSAGE_BYTES) {
          throw new GrpcError(
            Status.RESOURCE_EXHAUSTED,
            `Received message larger than max (${this.#need} vs. ${MAX_RECEIVE_MESSAGE_BYTES})`,
          );
        }
      }
      if (this.#have < this.#need) return;
      const message = this.#take(this.#need);
      this.#need = -1;
      emit(message);
    }
  }

  #take(n: number): Buffer {
    const first = this.#chunks[0] as Buffer;
    let all = first;
    if (first.length < n) {
      all = Buffer.concat(this.#chunks, this.#have);
      this.#chunks = [all];
    }
    const taken = all.subarray(0, n);
    const rest = all.subarray(n);
    if (rest.length === 0) this.#chunks.shift();
    else this.#chunks[0] = rest;
    this.#have -= n;
    return taken;
  }
}

/** The gRPC status an HTTP status maps to when a response carries no `grpc-status` (gRPC's table). */
function statusOfHttp(status: number): number {
  switch (status) {
    case 400:
      return Status.INTERNAL;
    case 401:
      return Status.UNAUTHENTICATED;
    case 403:
      return 7;
    case 404:
      return 12;
    case 429:
    case 502:
    case 503:
    case 504:
      return Status.UNAVAILABLE;
    default:
      return Status.UNKNOWN;
  }
}

/** `grpc-timeout`: at most 8 digits, in milliseconds while they fit, else in seconds. */
export function grpcTimeout(ms: number): string {
  return ms <= 99_999_999 ? `${ms}m` : `${Math.min(99_999_999, Math.ceil(ms / 1000))}S`;
}

/** The percent-decoded `grpc-message` (the server's text may hold any UTF-8). */
function grpcMessage(headers: IncomingHttpHeaders): string {
  const raw = headers['grpc-message'];
  const text = Array.isArray(raw) ? raw.join(',') : (raw ?? '');
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

/** The status of a response's trailers (or trailers-only headers); `undefined` when absent. */
function statusOf(headers: IncomingHttpHeaders): GrpcError | 0 | undefined {
  const raw = headers['grpc-status'];
  if (raw === undefined) return undefined;
  const code = Number(raw);
  if (code === 0) return 0;
  return new GrpcError(Number.isInteger(code) ? code : Status.UNKNOWN, grpcMessage(headers));
}

/** One call on the wire: shared by unary calls and streams. */
interface Exchange {
  readonly req: ClientHttp2Stream;
  /** Whether the session had connected when the call started (else it may never have been sent). */
  readonly connected: () => boolean;
}

/** One HTTP/2 session to a member and the calls open on it. */
class Conn {
  readonly session: ClientHttp2Session;
  connected = false;
  /** The server's SETTINGS arrived: the HTTP/2 handshake is done. */
  handshaken = false;
  /** Why the session ended, when an error said so. */
  error: unknown;
  /** Calls and streams open (they keep the session referenced and pinged). */
  active = 0;
  #pingTimer: NodeJS.Timeout | undefined;
  readonly #opts: GrpcChannelOptions;

  constructor(opts: GrpcChannelOptions, onEnd: (c: Conn) => void, onReady: (c: Conn) => void) {
    this.#opts = opts;
    const tls = opts.tls;
    const options: SecureClientSessionOptions = {
      settings: { enablePush: false, initialWindowSize: RECEIVE_WINDOW_BYTES },
      ...(tls?.ca === undefined ? {} : { ca: tls.ca }),
      ...(tls?.cert === undefined ? {} : { cert: tls.cert }),
      ...(tls?.key === undefined ? {} : { key: tls.key }),
      // gRPC over TLS negotiates h2 with ALPN.
      ...(tls === undefined ? {} : { ALPNProtocols: ['h2'] }),
    };
    const session = connect(`${tls === undefined ? 'http' : 'https'}://${opts.endpoint}`, options);
    this.session = session;
    session.unref();
    session.on('connect', () => {
      this.connected = true;
      session.setLocalWindowSize(RECEIVE_WINDOW_BYTES);
    });
    const connectTimeoutMs = opts.connectTimeoutMs ?? CONNECT_TIMEOUT_MS;
    let connectTimer: NodeJS.Timeout | undefined;
    if (connectTimeoutMs > 0) {
      connectTimer = setTimeout(
        () =>
          // After this turn's I/O: a stalled event loop runs due timers before it reads the socket,
          // and SETTINGS that already arrived must win.
          setImmediate(() => {
            if (this.handshaken || session.destroyed) return;
            session.destroy(
              new Error(`no HTTP/2 SETTINGS from the server within ${connectTimeoutMs} ms (connect timeout)`),
            );
          }),
        connectTimeoutMs,
      );
      connectTimer.unref();
    }
    session.once('remoteSettings', () => {
      clearTimeout(connectTimer);
      this.handshaken = true;
      onReady(this);
    });
    const end = (): void => {
      clearTimeout(connectTimer);
      this.#stopPings();
      onEnd(this);
    };
    // Streams see an error too (as their 'error' and 'close'); the channel opens a new session.
    session.on('error', (err: unknown) => {
      this.error ??= err;
      end();
    });
    session.on('goaway', () => onEnd(this));
    session.on('close', end);
  }

  get usable(): boolean {
    return !this.session.closed && !this.session.destroyed;
  }

  /** Keeps the session referenced and pinged while `req` is open. */
  track(req: ClientHttp2Stream): void {
    if (this.active++ === 0) {
      this.session.ref();
      this.#startPings();
    }
    req.once('close', () => {
      if (--this.active > 0) return;
      this.#stopPings();
      if (!this.session.destroyed) this.session.unref();
    });
  }

  #startPings(): void {
    this.#stopPings();
    const session = this.session;
    this.#pingTimer = setInterval(() => {
      if (session.destroyed || !this.connected) return;
      const timeout = setTimeout(() => {
        session.destroy(
          new Error(`no answer to a keep-alive ping within ${this.#opts.keepAliveTimeoutMs} ms`),
        );
      }, this.#opts.keepAliveTimeoutMs);
      try {
        session.ping(() => clearTimeout(timeout));
      } catch {
        clearTimeout(timeout);
      }
    }, this.#opts.keepAliveMs);
    this.#pingTimer.unref();
  }

  #stopPings(): void {
    clearInterval(this.#pingTimer);
    this.#pingTimer = undefined;
  }
}

/** One member's channel: a session, replaced when it ends or received GOAWAY. */
export class GrpcChannel {
  readonly endpoint: string;
  readonly #opts: GrpcChannelOptions;
  readonly #backoff: ResolvedBackoff;
  readonly #random: () => number;
  #conn: Conn | undefined;
  #closed = false;
  /** Connection attempts that failed in a row (0 once one completes its handshake). */
  #failedAttempts = 0;
  /** `performance.now()` before which no new connection is dialled. */
  #retryAt = 0;
  /** Why the last attempt failed. */
  #lastError: unknown;
  /** The sessions whose end was accounted for (each counts once). */
  readonly #ended = new WeakSet<Conn>();

  constructor(opts: GrpcChannelOptions) {
    this.#opts = opts;
    this.endpoint = opts.endpoint;
    this.#backoff = opts.reconnect ?? RECONNECT_BACKOFF;
    this.#random = opts.random ?? Math.random;
  }

  /** See {@link ChannelState}. */
  get state(): ChannelState {
    if (this.#closed) return 'closed';
    const conn = this.#conn;
    if (conn !== undefined && conn.usable) return conn.handshaken ? 'ready' : 'connecting';
    return performance.now() < this.#retryAt ? 'backing-off' : 'idle';
  }

  /** When a channel in back-off may dial again (`performance.now()` ms). */
  get retryAt(): number {
    return this.#retryAt;
  }

  /** Connection attempts that failed in a row. */
  get failedAttempts(): number {
    return this.#failedAttempts;
  }

  /** Sends one request; resolves with the decoded response or rejects with a {@link GrpcError}. */
  unary<T>(path: string, message: Buffer, decode: (body: Buffer) => T, options: CallOptions): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const { signal, deadline } = options;
      if (signal?.aborted) {
        reject(new GrpcError(Status.CANCELLED, 'Cancelled on client', { neverSent: true }));
        return;
      }
      const timeoutMs = Math.ceil(deadline - Date.now());
      if (timeoutMs <= 0) {
        reject(new GrpcError(Status.DEADLINE_EXCEEDED, 'Deadline exceeded', { neverSent: true }));
        return;
      }
      let ex: Exchange;
      try {
        ex = this.#open(path, { 'grpc-timeout': grpcTimeout(timeoutMs), ...options.metadata });
      } catch (err) {
        // eslint-disable-next-line @typescript-eslint/prefer-promise-reject-errors
        reject(err);
        return;
      }
      const { req } = ex;
      let response: Buffer | undefined;
      let failure: GrpcError | undefined;
      let status: GrpcError | 0 | undefined;
      let transportError: unknown;
      const fail = (err: GrpcError): void => {
        failure ??= err;
        if (!req.closed) req.close(constants.NGHTTP2_CANCEL);
      };
      const timer = setTimeout(
        () => fail(new GrpcError(Status.DEADLINE_EXCEEDED, 'Deadline exceeded')),
        timeoutMs,
      );
      const offAbort = onAbort(signal, () => fail(new GrpcError(Status.CANCELLED, 'Cancelled on client')));
      const reader = new MessageReader();
      req.on('response', (headers: IncomingHttpHeaders & IncomingHttpStatusHeader) => {
        status = statusOf(headers);
        const http = Number(headers[':status']);
        if (status === undefined && http !== 200)
          fail(new GrpcError(statusOfHttp(http), `Received HTTP status code ${http}`));
      });
      req.on('data', (chunk: Buffer) => {
        try {
          reader.push(chunk, (m) => (response = m));
        } catch (err) {
          fail(err as GrpcError);
        }
      });
      req.on('trailers', (trailers: IncomingHttpHeaders) => {
        status = statusOf(trailers) ?? status;
      });
      req.on('error', (err: unknown) => (transportError = err));
      req.on('close', () => {
        clearTimeout(timer);
        offAbort();
        if (failure !== undefined) return reject(failure);
        if (status instanceof GrpcError) return reject(status);
        if (status === 0) {
          if (response === undefined)
            return reject(new GrpcError(Status.INTERNAL, 'the server sent no response message'));
          try {
            return resolve(decode(response));
          } catch (err) {
            return reject(
              new GrpcError(Status.INTERNAL, `cannot decode the response: ${(err as Error).message}`),
            );
          }
        }
        reject(lost(ex, transportError));
      });
      req.end(message);
    });
  }

  /** Opens a bidirectional stream; messages are encoded with `encode` and decoded with `decode`. */
  stream<Req, Res>(
    path: string,
    encode: (request: Req) => Buffer,
    decode: (body: Buffer) => Res,
    metadata: Metadata = {},
  ): GrpcStream<Req, Res> {
    const ex = this.#open(path, metadata);
    return new GrpcStream(ex, encode, decode, (err) => lost(ex, err));
  }

  /**
   * Sends no new calls over the current session (the next call connects again); calls already on it
   * finish, still pinged. What etcd3 did on a recoverable error ("reset all services").
   */
  reset(): void {
    const conn = this.#conn;
    this.#conn = undefined;
    if (conn !== undefined && !conn.session.closed) conn.session.close();
  }

  /** Destroys the session and its calls; later calls fail. Idempotent. */
  close(): void {
    this.#closed = true;
    const conn = this.#conn;
    this.#conn = undefined;
    conn?.session.destroy();
  }

  #open(path: string, metadata: Metadata): Exchange {
    if (this.#closed) throw new ClosedError('etcd client');
    let conn = this.#conn;
    if (conn === undefined || !conn.usable) {
      const wait = this.#retryAt - performance.now();
      if (wait > 0) throw new BackoffError(this.endpoint, this.#failedAttempts, wait, this.#lastError);
      conn = new Conn(
        this.#opts,
        (c) => this.#onEnd(c),
        () => {
          this.#failedAttempts = 0;
          this.#retryAt = 0;
          this.#lastError = undefined;
        },
      );
      this.#conn = conn;
    }
    let req: ClientHttp2Stream;
    try {
      req = conn.session.request(
        {
          ':method': 'POST',
          ':path': path,
          'content-type': 'application/grpc',
          te: 'trailers',
          ...metadata,
        },
        { endStream: false },
      );
    } catch (err) {
      // The session ended between the check and the request (ERR_HTTP2_GOAWAY_SESSION, …).
      if (this.#conn === conn) this.#conn = undefined;
      throw new GrpcError(Status.UNAVAILABLE, `No connection established: ${(err as Error).message}`, {
        neverSent: true,
        cause: err,
      });
    }
    conn.track(req);
    const c = conn;
    const connectedAtStart = c.connected;
    return { req, connected: () => connectedAtStart || c.connected };
  }

  /** A session ended: one that never completed its handshake was a failed attempt, and backs off. */
  #onEnd(c: Conn): void {
    if (this.#conn === c) this.#conn = undefined;
    if (c.handshaken || this.#ended.has(c) || this.#closed) return;
    if (c.usable) return; // GOAWAY before SETTINGS: accounted for at its close
    this.#ended.add(c);
    // An older attempt that ends after a newer one worked says nothing about the member now.
    if (this.#conn?.handshaken === true) return;
    this.#failedAttempts++;
    this.#lastError = c.error;
    this.#retryAt = performance.now() + backoffDelay(this.#backoff, this.#failedAttempts, this.#random);
  }
}

/** The error for a call that ended without a status: the connection was lost (or never made). */
function lost(ex: Exchange, err: unknown): GrpcError {
  const why = err instanceof Error ? err.message : `stream closed (code ${ex.req.rstCode ?? '?'})`;
  const refused = ex.req.rstCode === constants.NGHTTP2_REFUSED_STREAM;
  const connected = ex.connected();
  return new GrpcError(
    Status.UNAVAILABLE,
    connected ? `Connection lost: ${why}` : `No connection established: ${why}`,
    { neverSent: !connected || refused, ...(err === undefined ? {} : { cause: err }) },
  );
}

type StreamEvents<Res> = {
  data: [Res];
  error: [GrpcError];
  end: [];
};

/**
 * A bidirectional stream, with the part of grpc-js's duplex stream the engine uses: `write()`,
 * `cancel()`, `writable`, and the events `data`, `error` (any status but OK, CANCELLED after
 * {@link cancel}) and `end` (status OK).
 */
export class GrpcStream<Req, Res> extends EventEmitter<StreamEvents<Res>> {
  readonly #req: ClientHttp2Stream;
  readonly #encode: (request: Req) => Buffer;
  #cancelled = false;
  #failure: GrpcError | undefined;
  #finished = false;

  constructor(
    ex: Exchange,
    encode: (request: Req) => Buffer,
    decode: (body: Buffer) => Res,
    lost: (err: unknown) => GrpcError,
  ) {
    super();
    this.#req = ex.req;
    this.#encode = encode;
    const req = ex.req;
    const reader = new MessageReader();
    let status: GrpcError | 0 | undefined;
    let transportError: unknown;
    req.on('response', (headers: IncomingHttpHeaders & IncomingHttpStatusHeader) => {
      status = statusOf(headers);
      const http = Number(headers[':status']);
      if (status === undefined && http !== 200)
        this.#fail(new GrpcError(statusOfHttp(http), `Received HTTP status code ${http}`));
    });
    req.on('data', (chunk: Buffer) => {
      try {
        reader.push(chunk, (m) => {
          if (this.#failure === undefined && !this.#cancelled) this.emit('data', decode(m));
        });
      } catch (err) {
        this.#fail(
          err instanceof GrpcError
            ? err
            : new GrpcError(Status.INTERNAL, `cannot decode a message: ${(err as Error).message}`),
        );
      }
    });
    req.on('trailers', (trailers: IncomingHttpHeaders) => {
      status = statusOf(trailers) ?? status;
    });
    req.on('error', (err: unknown) => (transportError = err));
    // The server ended its side (with its status): end ours, or the stream never closes.
    req.on('end', () => {
      if (!req.writableEnded) req.end();
    });
    req.on('close', () => {
      let err: GrpcError | undefined;
      if (this.#cancelled) err = new GrpcError(Status.CANCELLED, 'Cancelled on client');
      else if (this.#failure !== undefined) err = this.#failure;
      else if (status instanceof GrpcError) err = status;
      else if (status === undefined) err = lost(transportError);
      try {
        if (err === undefined) this.emit('end');
        else if (this.listenerCount('error') > 0) this.emit('error', err);
      } finally {
        this.#finished = true;
      }
    });
  }

  /**
   * False once this side cancelled or failed the stream, or after its end was reported; still true
   * while its `error` listeners run for a failure that came from the server or the connection (as
   * grpc-js's duplex stream, which the engine tells "cancelled by us" from "failed" with).
   */
  get writable(): boolean {
    return !this.#cancelled && this.#failure === undefined && !this.#finished;
  }

  /** Sends one message (dropped when the stream is no longer writable). */
  write(request: Req): void {
    if (!this.writable || this.#req.closed) return;
    this.#req.write(this.#encode(request));
  }

  /** Ends the stream with RST_STREAM CANCEL; an `error` with status CANCELLED follows. */
  cancel(): void {
    if (this.#cancelled) return;
    this.#cancelled = true;
    if (!this.#req.closed) this.#req.close(constants.NGHTTP2_CANCEL);
  }

  #fail(err: GrpcError): void {
    this.#failure ??= err;
    if (!this.#req.closed) this.#req.close(constants.NGHTTP2_CANCEL);
  }
}
