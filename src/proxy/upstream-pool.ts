/**
 * The upstream pool: keep-alive HTTP/1.1 connections to one backend origin on raw `net` sockets, one
 * exchange at a time per connection (no pipelining), at most `connections` of them (further exchanges
 * queue). An exchange writes a prepared request head, streams the request body with back-pressure
 * (re-framed as chunked when asked), and hands the response — read by the {@link ResponseFramer} — to
 * its handler, pausing the socket while the handler's reader is slow. It replaced undici on the proxy's
 * data path (docs/proxy.md, "A leaner data path"): the same job without a general-purpose client's
 * per-request objects.
 *
 * Failures reach the handler once, as an {@link UpstreamError} or the socket's own error (`ECONNREFUSED`…);
 * a connection whose exchange failed, was aborted or ended unusually is destroyed, never reused.
 */
import { connect, type Socket } from 'node:net';
import type { UpstreamSettings } from './config.js';
import { ResponseFramer, type ResponseHead, type ResponseSink } from './response-framer.js';
import { UpstreamError } from './upstream-error.js';
import { writeLatin1 } from './direct-write.js';

/**
 * The coarse clock of the timeouts: one timer per server advances `now` (monotonic ms) and sweeps the
 * connections every `intervalMs`, instead of a socket timer per connection that every read and write
 * re-arms (measured: ~3 % of a worker's CPU).
 */
export interface SweepClock {
  now: number;
  readonly intervalMs: number;
}

/**
 * The upstream sockets' read buffer, one per process: a read is handled whole before the next one
 * (the framer copies what it keeps; handlers are told a chunk is valid during the call only).
 */
const READ_BUFFER = Buffer.allocUnsafe(64 * 1024);

/** 1 s off a backend's advertised `Keep-Alive: timeout`, so the proxy never sends on a closing socket. */
const KEEPALIVE_MARGIN_MS = 1000;

/** Where a request body's bytes go (the upstream exchange). */
export interface BodySink {
  bodyData(chunk: Buffer): void;
  bodyEnd(): void;
}

/** A request body: delivers its bytes to one sink, pausable (the client's side, client-conn.ts). */
export interface BodySource {
  /** Starts delivering (bytes already read first; `bodyEnd` at the end). */
  pipe(sink: BodySink): void;
  pause(): void;
  resume(): void;
  /** Stops delivering. */
  unpipe(): void;
}

export interface UpstreamRequest {
  /** The request line and header fields, ending in the blank line (latin1). */
  readonly head: string;
  /** The request body, streamed; null for none. */
  readonly body: BodySource | null;
  /** Frame the body as `Transfer-Encoding: chunked` (the head says so). */
  readonly chunked: boolean;
  /** A HEAD request: the response has no body whatever its header fields say. */
  readonly noResponseBody: boolean;
  /** Open a new connection for it (a retry after a kept-alive one went stale), never an idle one. */
  readonly newConnection?: boolean;
}

export interface UpstreamHandler {
  onHead(head: ResponseHead): void;
  /**
   * A piece of the decoded body, valid during the call only (a view of a read buffer the pool shares
   * between its sockets: copy what is kept); false asks for a pause until {@link Exchange.resume}.
   */
  onData(chunk: Buffer): boolean;
  onEnd(): void;
  onError(err: Error): void;
  /**
   * One read's bytes were all handed over (a response head that came without body bytes can go now:
   * the handler may hold it back to send it with the first ones).
   */
  onReadEnd(): void;
}

/** One request/response on a pooled connection. */
export class Exchange implements ResponseSink, BodySink {
  readonly request: UpstreamRequest;
  readonly #handler: UpstreamHandler;
  readonly #pool: UpstreamPool;
  conn: Connection | undefined;
  bodySent: boolean;
  #over = false;
  /** While the body streams: the upstream socket it goes to. */
  #socket: Socket | undefined;
  #headSent = false;
  #waiting = false;
  /** Made at the first back-pressure only (no closure per exchange). */
  #drained: (() => void) | undefined;

  constructor(pool: UpstreamPool, request: UpstreamRequest, handler: UpstreamHandler) {
    this.#pool = pool;
    this.request = request;
    this.#handler = handler;
    this.bodySent = request.body === null;
  }

  /** Resumes reading the response after `onData` returned false. */
  resume(): void {
    this.conn?.socket.resume();
  }

  /** The client went away: the connection is cut (it is mid-exchange), nothing more is reported. */
  abort(): void {
    if (this.#over) return;
    this.#over = true;
    this.stopBody();
    if (this.conn === undefined) this.#pool.dequeue(this);
    else this.conn.destroy();
  }

  /**
   * Writes the head and streams the body onto `socket`. With a body, the head waits for its first
   * bytes (or its end): a body the client's side refuses as malformed never opens a request upstream,
   * and head and first bytes leave in one write.
   */
  send(socket: Socket): void {
    const { head, body } = this.request;
    if (body === null) {
      writeLatin1(socket, head);
      return;
    }
    this.#socket = socket;
    this.#headSent = false;
    body.pipe(this);
  }

  bodyData(c: Buffer): void {
    const socket = this.#socket;
    if (socket === undefined || c.length === 0) return;
    const chunked = this.request.chunked;
    socket.cork();
    if (!this.#headSent) {
      this.#headSent = true;
      socket.write(this.request.head, 'latin1');
    }
    if (chunked) socket.write(`${c.length.toString(16)}\r\n`, 'latin1');
    let ok = socket.write(c);
    if (chunked) ok = socket.write('\r\n', 'latin1');
    socket.uncork();
    this.conn?.touch();
    if (!ok && !this.#waiting) {
      this.#waiting = true;
      this.request.body?.pause();
      this.#drained ??= () => {
        this.#waiting = false;
        if (this.#socket !== undefined) this.request.body?.resume();
      };
      socket.once('drain', this.#drained);
    }
  }

  bodyEnd(): void {
    const socket = this.#socket;
    if (socket === undefined) return;
    if (!this.#headSent) {
      this.#headSent = true;
      socket.write(this.request.head, 'latin1');
    }
    if (this.request.chunked) socket.write('0\r\n\r\n', 'latin1');
    this.bodySent = true;
    this.stopBody();
  }

  /** Stops streaming the body (it ended, or the exchange is over). */
  stopBody(): void {
    const socket = this.#socket;
    if (socket === undefined) return;
    this.#socket = undefined;
    if (this.#drained !== undefined) socket.off('drain', this.#drained);
    this.request.body?.unpipe();
    if (this.#waiting) {
      this.#waiting = false;
      this.request.body?.resume();
    }
  }

  head(head: ResponseHead): void {
    this.conn?.noteHead(head);
    if (!this.#over) this.#handler.onHead(head);
  }

  data(chunk: Buffer): void {
    if (!this.#over && !this.#handler.onData(chunk)) this.conn?.socket.pause();
  }

  end(clean: boolean): void {
    if (this.#over) return;
    this.#over = true;
    this.conn?.complete(this, clean);
    this.#handler.onEnd();
  }

  readEnd(): void {
    if (!this.#over) this.#handler.onReadEnd();
  }

  fail(err: Error): void {
    if (this.#over) return;
    this.#over = true;
    this.stopBody();
    this.#handler.onError(err);
  }
}

/** One keep-alive socket to the backend and its response framer. */
class Connection {
  readonly socket: Socket;
  readonly #pool: UpstreamPool;
  readonly #framer = new ResponseFramer();
  #exchange: Exchange | undefined;
  #connected = false;
  #error: Error | undefined;
  #gone = false;
  /** Exchanges carried to their end: a connection that carried one is a reused keep-alive socket. */
  #carried = 0;
  /** Bytes of the current exchange's response arrived. */
  #answered = false;

  /** Coarse ms (the pools' sweep clock) of the socket's last activity, or of its return to the pool. */
  #since: number;
  /** While idle in the pool: how long it may stay. */
  #idleMs = 0;

  constructor(pool: UpstreamPool) {
    this.#pool = pool;
    this.#since = pool.clock.now;
    this.socket = connect({
      port: pool.port,
      host: pool.host,
      noDelay: true,
      // reads land in one shared buffer and come straight here: no stream machinery, no buffer per read
      onread: { buffer: READ_BUFFER, callback: (n: number) => this.#read(n) },
    });
    this.socket.once('connect', () => {
      this.#connected = true;
      this.#since = this.#pool.clock.now;
    });
    this.socket.on('error', (err) => (this.#error ??= err));
    this.socket.once('close', () => this.#closed());
  }

  assign(ex: Exchange): void {
    this.#exchange = ex;
    this.#answered = false;
    ex.conn = this;
    this.#reusable = true;
    this.#keepAliveMs = undefined;
    this.#since = this.#pool.clock.now;
    this.#framer.start(ex, ex.request.noResponseBody);
    ex.send(this.socket);
  }

  /** Activity (request body bytes written): the timeouts count from now. */
  touch(): void {
    this.#since = this.#pool.clock.now;
  }

  /** Back in the pool, for up to `ms`. */
  idle(ms: number): void {
    this.#idleMs = ms;
    this.#since = this.#pool.clock.now;
  }

  /**
   * May an idle connection be reused? Only well inside its idle time: the sweep clock is coarse (one
   * interval), so a socket is given up an interval early rather than reused as the backend closes it.
   */
  fresh(): boolean {
    const c = this.#pool.clock;
    return c.now - this.#since < this.#idleMs - c.intervalMs;
  }

  /** Checks the connection's timeout (connect, response head, body silence, idle). */
  sweep(now: number): void {
    const s = this.#pool.settings;
    const limit = !this.#connected
      ? s.connectTimeoutMs
      : this.#exchange === undefined
        ? this.#idleMs - this.#pool.clock.intervalMs
        : this.#framer.waitingForHead
          ? s.headersTimeoutMs
          : s.bodyTimeoutMs;
    if (now - this.#since > limit) this.#timeout();
  }

  /** The exchange's response is complete: back to the pool if the connection can carry another. */
  complete(ex: Exchange, clean: boolean): void {
    if (this.#exchange !== ex) return;
    this.#exchange = undefined;
    ex.conn = undefined;
    if (!ex.bodySent) {
      ex.stopBody(); // the backend answered before the whole body was sent: this socket is done
      this.destroy();
      return;
    }
    if (!this.#reusable || !clean) {
      this.destroy();
      return;
    }
    this.socket.resume();
    this.#carried++;
    this.#pool.release(this, this.#keepAliveMs);
  }

  #reusable = true;
  #keepAliveMs: number | undefined;

  destroy(): void {
    this.#exchange = undefined;
    this.socket.destroy();
  }

  #read(n: number): boolean {
    this.#data(READ_BUFFER.subarray(0, n));
    this.#exchange?.readEnd();
    return true; // a pause is the exchange's `socket.pause()`
  }

  #data(d: Buffer): void {
    const ex = this.#exchange;
    if (ex === undefined) {
      this.destroy(); // bytes nobody asked for: the connection's framing is lost
      return;
    }
    this.#answered = true;
    try {
      this.#since = this.#pool.clock.now;
      this.#framer.feed(d);
    } catch (err) {
      this.#exchange = undefined;
      ex.conn = undefined;
      this.socket.destroy();
      ex.fail(err as Error);
    }
  }

  /** The framer hands the head to the exchange through this hook (keep-alive facts). */
  noteHead(head: ResponseHead): void {
    this.#reusable = head.keepAlive;
    this.#keepAliveMs =
      head.keepAliveMs === undefined ? undefined : Math.max(0, head.keepAliveMs - KEEPALIVE_MARGIN_MS);
  }

  #timeout(): void {
    const ex = this.#exchange;
    const s = this.#pool.settings;
    if (ex === undefined) {
      this.destroy(); // idle past the keep-alive timeout
      return;
    }
    const err = !this.#connected
      ? new UpstreamError('UPSTREAM_CONNECT_TIMEOUT', `no connection within ${s.connectTimeoutMs} ms`)
      : this.#framer.waitingForHead
        ? new UpstreamError('UPSTREAM_HEADERS_TIMEOUT', `no response head within ${s.headersTimeoutMs} ms`)
        : new UpstreamError('UPSTREAM_BODY_TIMEOUT', `the response body stalled for ${s.bodyTimeoutMs} ms`);
    this.#exchange = undefined;
    ex.conn = undefined;
    this.socket.destroy();
    ex.fail(err);
  }

  #closed(): void {
    if (this.#gone) return;
    this.#gone = true;
    this.#pool.forget(this);
    const ex = this.#exchange;
    this.#exchange = undefined;
    if (ex === undefined) return;
    if (this.#framer.untilClose && this.#error === undefined) {
      this.#framer.closed(); // the close-delimited body's end (ends the exchange)
      return;
    }
    ex.conn = undefined;
    const err = this.#error ?? new UpstreamError('UPSTREAM_CLOSED', 'the backend closed the connection');
    // A reused socket that ends before any answer: the backend closed it while idle as the request
    // went out (the keep-alive race of RFC 9112 §9.3.1.1). The backend is there; the request may not
    // have reached it.
    ex.fail(
      this.#carried > 0 && !this.#answered
        ? new UpstreamError(
            'UPSTREAM_STALE',
            `the backend closed a kept-alive connection before answering (${(err as { code?: string }).code ?? err.message})`,
          )
        : err,
    );
  }
}

/** The keep-alive pool of one backend origin. */
export class UpstreamPool {
  readonly settings: UpstreamSettings;
  readonly clock: SweepClock;
  readonly host: string;
  readonly port: number;
  readonly #all = new Set<Connection>();
  readonly #idle: Connection[] = [];
  readonly #queue: Exchange[] = [];
  #open = 0;
  #closed = false;

  constructor(origin: string, settings: UpstreamSettings, clock: SweepClock) {
    const url = new URL(origin);
    this.host = url.hostname.replace(/^\[(.*)\]$/, '$1');
    this.port = Number(url.port || 80);
    this.settings = settings;
    this.clock = clock;
  }

  /** Starts an exchange on an idle connection, a new one, or (at the cap) after one frees. */
  request(request: UpstreamRequest, handler: UpstreamHandler): Exchange {
    const ex = new Exchange(this, request, handler);
    if (this.#closed) {
      ex.fail(new UpstreamError('UPSTREAM_POOL_CLOSED', 'the proxy is closing'));
      return ex;
    }
    let idle = request.newConnection === true ? undefined : this.#idle.pop();
    while (idle !== undefined && !idle.fresh()) {
      idle.destroy(); // idle too long: the backend may be closing it
      idle = this.#idle.pop();
    }
    if (idle !== undefined) idle.assign(ex);
    else if (this.#open < this.settings.connections) this.#connect().assign(ex);
    else this.#queue.push(ex);
    return ex;
  }

  #connect(): Connection {
    this.#open++;
    const c = new Connection(this);
    this.#all.add(c);
    return c;
  }

  sweep(now: number): void {
    for (const c of this.#all) c.sweep(now);
  }

  /** Connections open or opening. */
  get size(): number {
    return this.#all.size;
  }

  release(conn: Connection, keepAliveMs: number | undefined): void {
    const next = this.#queue.shift();
    if (next !== undefined) {
      conn.assign(next);
      return;
    }
    const ms = Math.min(this.settings.keepAliveTimeoutMs, keepAliveMs ?? Infinity);
    if (ms <= 0) {
      conn.destroy();
      return;
    }
    conn.idle(ms);
    this.#idle.push(conn);
  }

  forget(conn: Connection): void {
    this.#open--;
    this.#all.delete(conn);
    const i = this.#idle.indexOf(conn);
    if (i >= 0) this.#idle.splice(i, 1);
    const next = this.#closed ? undefined : this.#queue.shift();
    if (next !== undefined) this.#connect().assign(next);
  }

  dequeue(ex: Exchange): void {
    const i = this.#queue.indexOf(ex);
    if (i >= 0) this.#queue.splice(i, 1);
  }

  /** Cuts every connection; queued exchanges fail with `UPSTREAM_POOL_CLOSED`. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const ex of this.#queue.splice(0))
      ex.fail(new UpstreamError('UPSTREAM_POOL_CLOSED', 'the proxy is closing'));
    for (const c of this.#idle.splice(0)) c.destroy();
  }
}

/** One {@link UpstreamPool} per backend origin. */
export class UpstreamPools {
  readonly #pools = new Map<string, UpstreamPool>();
  readonly #settings: UpstreamSettings;
  readonly #clock: SweepClock;

  /** `clock.now` must be advanced, and {@link sweep} called, every `clock.intervalMs`. */
  constructor(settings: UpstreamSettings, clock: SweepClock) {
    this.#settings = settings;
    this.#clock = clock;
  }

  get(origin: string): UpstreamPool {
    let pool = this.#pools.get(origin);
    if (pool === undefined)
      this.#pools.set(origin, (pool = new UpstreamPool(origin, this.#settings, this.#clock)));
    return pool;
  }

  /**
   * Fires the connections' timeouts (the server's sweep timer calls it) and forgets every backend left
   * with no connection open or opening, telling `forget` its origin: a backend the routing table no
   * longer names leaves nothing behind once its kept-alive connections closed (the next request to
   * it, if any, starts a new pool).
   */
  sweep(now: number, forget?: (origin: string) => void): void {
    for (const [origin, p] of this.#pools) {
      p.sweep(now);
      if (p.size > 0) continue;
      this.#pools.delete(origin);
      forget?.(origin);
    }
  }

  /** True while some backend has a connection open or opening. */
  get busy(): boolean {
    for (const p of this.#pools.values()) if (p.size > 0) return true;
    return false;
  }

  get origins(): string[] {
    return [...this.#pools.keys()];
  }

  /** Cuts every pool's connections (exchanges in flight are aborted by their clients' ends). Idempotent. */
  close(): void {
    for (const p of this.#pools.values()) p.close();
    this.#pools.clear();
  }
}
