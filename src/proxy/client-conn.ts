/**
 * The client side of the proxy's data path on raw `net` sockets (it replaced node:http's server and
 * `ServerResponse`, docs/proxy.md "A leaner data path"): one {@link ClientConnection} per accepted
 * socket runs the HTTP/1.1 connection loop —
 *
 * - requests parsed by {@link RequestParser} (llhttp, strict), answered one at a time and in order:
 *   pipelined requests wait parsed in a queue (the socket is paused meanwhile);
 * - each request is a {@link ClientExchange}: the request body as a pausable source for the upstream
 *   exchange (`Expect: 100-continue` answered when the body is first asked for), and the response
 *   writer: the head and the first body bytes leave in one write (cork, uncorked on the next tick);
 *   `Content-Length` passed through, else chunked to HTTP/1.1 clients and close-delimited to HTTP/1.0;
 *   no body for HEAD, 204 and 304; `Connection: close` while draining, for a request that asked for it,
 *   and when the request's body was not all read; `Keep-Alive: timeout=N` otherwise;
 * - timeouts, checked by {@link ClientConnections.sweep} (one timer per server, as node:http's
 *   `connectionsCheckingInterval`): a head not complete within `headersTimeout` → 408 and close
 *   (slowloris); a request body not complete within `requestTimeout` → 408; an idle keep-alive
 *   connection closed after `keepAliveTimeout`; no socket activity for `idleTimeout` → destroyed
 *   (slow readers), the exchange aborted;
 * - a malformed request → 400 (a head too large → 431) and close, nothing forwarded;
 * - an `Upgrade` request leaves the loop with its socket and the bytes after its head.
 */
import type { Socket } from 'node:net';
import { STATUS_CODES } from 'node:http';
import type { ClientSettings } from './config.js';
import {
  RequestParser,
  type ClientRequest,
  type Refusal,
  type RequestParserHandler,
} from './request-parser.js';
import type { BodySink, BodySource, SweepClock } from './upstream-pool.js';
import type { SocketReader } from './accept.js';
import { writeLatin1 } from './direct-write.js';
import { dateHeaderLine } from './headers.js';

/** What a connection asks of its server. */
export interface ConnectionHooks<T> {
  /** It is this request's turn: start it (answer through `exchange`); returns its context. */
  request(exchange: ClientExchange<T>): T;
  /** The request's exchange is over: its response was written whole (`finished`), or the client left. */
  done(ctx: T, finished: boolean): void;
  /** An upgrade: the (paused) socket, out of the loop, and the bytes after the head. */
  upgrade(req: ClientRequest, socket: Socket, rest: Buffer): void;
  /** True while the server drains: every response carries `Connection: close`. */
  draining(): boolean;
}

/** Pause reasons (the socket reads only while none is set). */
const PAUSE_BODY = 1; // the upstream socket is full
const PAUSE_QUEUE = 2; // requests wait, parsed, or a body waits unread

/** 2 s for a client to read the last answer and close, after the proxy ended the connection. */
const LINGER_MS = 2000;

/** 64 KiB of request body buffered before the upstream exchange asks for it; then the socket pauses. */
const MAX_BUFFERED_BODY = 64 * 1024;

const CONTINUE = 'HTTP/1.1 100 Continue\r\n\r\n';

/** A response head and a first body chunk up to 16 KiB leave as one string in one write. */
const ONE_WRITE_BYTES = 16 * 1024;

/** One request and its response on a client connection. */
export class ClientExchange<T = unknown> implements BodySource {
  readonly req: ClientRequest;
  readonly conn: ClientConnection<T>;
  ctx: T | undefined;
  /** The request's body has been read whole. */
  complete = false;
  /** The response head went out. */
  responded = false;
  /** The response was written whole. */
  finished = false;
  /** Monotonic ms (the connections' coarse clock) when the request's head arrived. */
  readonly startedAt: number;
  #sink: BodySink | undefined;
  #chunks: Buffer[] | undefined;
  #buffered = 0;
  #continued = false;
  #chunked = false;
  #close = false;
  /** For an upgrade: the bytes after the head. */
  rest: Buffer | undefined;

  constructor(conn: ClientConnection<T>, req: ClientRequest, now: number) {
    this.conn = conn;
    this.req = req;
    this.startedAt = now;
  }

  // ── the request body (BodySource) ─────────────────────────────────────────────────────────────

  pipe(sink: BodySink): void {
    if (this.finished) return;
    if (this.req.expectContinue && !this.#continued && !this.responded && !this.complete) {
      this.#continued = true;
      this.conn.socket.write(CONTINUE, 'latin1');
    }
    this.#sink = sink;
    const chunks = this.#chunks;
    if (chunks !== undefined) {
      this.#chunks = undefined;
      this.#buffered = 0;
      for (const c of chunks) sink.bodyData(c);
      this.conn.unpause(PAUSE_QUEUE);
    }
    if (this.complete) sink.bodyEnd();
  }

  // (an exchange that is over must not pause or resume the connection's next one)
  pause(): void {
    if (this.conn.current(this)) this.conn.pause(PAUSE_BODY);
  }

  resume(): void {
    if (this.conn.current(this)) this.conn.unpause(PAUSE_BODY);
  }

  unpipe(): void {
    this.#sink = undefined;
    if (this.conn.current(this)) this.conn.unpause(PAUSE_BODY);
  }

  /** A piece of the body, from the parser. */
  bodyData(chunk: Buffer): void {
    if (this.#sink !== undefined) {
      this.#sink.bodyData(chunk);
      return;
    }
    (this.#chunks ??= []).push(chunk);
    this.#buffered += chunk.length;
    if (this.#buffered > MAX_BUFFERED_BODY) this.conn.pause(PAUSE_QUEUE);
  }

  /** The body's end, from the parser. */
  bodyEnd(): void {
    this.complete = true;
    this.#sink?.bodyEnd();
  }

  // ── the response ──────────────────────────────────────────────────────────────────────────────

  /**
   * Writes the response head: `fields` are header lines (each ending in CRLF) without framing or
   * connection fields; `length` the body's length when known. `bodyless`: HEAD, 204, 304.
   */
  writeHead(status: number, reason: string, fields: string, length: number | undefined): void {
    if (this.responded || this.finished || !this.conn.current(this)) return;
    this.responded = true;
    const req = this.req;
    const bodyless = req.method === 'HEAD' || status === 204 || status === 304;
    let head = `HTTP/1.1 ${status} ${reason === '' ? (STATUS_CODES[status] ?? '') : reason}\r\n${fields}`;
    if (length !== undefined) {
      if (!(status === 204 || status === 304)) head += `content-length: ${length}\r\n`;
    } else if (!bodyless) {
      if (req.minor === 1) {
        this.#chunked = true;
        head += 'transfer-encoding: chunked\r\n';
      } else this.#close = true; // HTTP/1.0: the body ends with the connection
    }
    if (this.conn.hooks.draining() || !req.keepAlive || !this.complete) this.#close = true;
    head += this.#close
      ? 'connection: close\r\n\r\n'
      : req.minor === 0
        ? `connection: keep-alive\r\n${this.conn.keepAliveField}\r\n`
        : `${this.conn.keepAliveField}\r\n`;
    this.#head = head;
    // it waits for the first body bytes or the end; if neither came with it, the upstream read's end
    // flushes it (UpstreamHandler.onReadEnd)
  }

  /** The head, written with the first body bytes, the end, or when the upstream read ends. */
  #head: string | undefined;

  /** Writes the head if it has not gone yet. */
  flushHead(): void {
    const head = this.#head;
    if (head === undefined) return;
    this.#head = undefined;
    if (!this.conn.socket.destroyed) writeLatin1(this.conn.socket, head);
  }

  /**
   * A piece of the response body (valid during the call only: it is copied, or turned into a string);
   * false when the client's socket is full (wait for `drain`).
   */
  write(chunk: Buffer): boolean {
    if (!this.responded || this.finished || chunk.length === 0) return true;
    this.conn.touch();
    const s = this.conn.socket;
    const head = this.#head;
    if (head !== undefined) {
      this.#head = undefined;
      if (chunk.length <= ONE_WRITE_BYTES) {
        // head and body in one string, one write (latin1 maps bytes 1:1)
        const body = chunk.toString('latin1');
        return writeLatin1(
          s,
          this.#chunked ? `${head}${chunk.length.toString(16)}\r\n${body}\r\n` : head + body,
        );
      }
      s.cork();
      s.write(head, 'latin1');
      const ok = this.#writeBody(s, chunk); // (copies)
      s.uncork();
      return ok;
    }
    return this.#writeBody(s, chunk);
  }

  /** Writes a body piece; `chunk` is valid during the call only (the upstream's read buffer): copied. */
  #writeBody(s: Socket, chunk: Buffer): boolean {
    if (chunk.length <= ONE_WRITE_BYTES) {
      const body = chunk.toString('latin1');
      return writeLatin1(s, this.#chunked ? `${chunk.length.toString(16)}\r\n${body}\r\n` : body);
    }
    const copy = Buffer.from(chunk);
    if (!this.#chunked) return s.write(copy);
    s.cork();
    s.write(`${chunk.length.toString(16)}\r\n`, 'latin1');
    s.write(copy);
    const ok = s.write('\r\n', 'latin1');
    s.uncork();
    return ok;
  }

  /** The response is complete. */
  end(): void {
    if (!this.responded || this.finished) return;
    this.finished = true;
    const s = this.conn.socket;
    const head = this.#head ?? '';
    this.#head = undefined;
    if (this.#chunked) writeLatin1(s, `${head}0\r\n\r\n`);
    else if (head !== '') writeLatin1(s, head);
    this.conn.finish(this, this.#close);
  }

  /** A whole response in one write (the proxy's own answers). */
  send(status: number, fields: string, body: string): void {
    this.writeHead(status, '', dateHeaderLine() + fields, Buffer.byteLength(body));
    const head = this.#head;
    if (head === undefined) return;
    this.#head = undefined;
    this.finished = true;
    const socket = this.conn.socket;
    socket.cork();
    socket.write(head, 'latin1');
    if (this.req.method !== 'HEAD') socket.write(body, 'utf8');
    socket.uncork();
    this.conn.finish(this, this.#close);
  }

  /** Cuts the connection (a response that cannot be completed). */
  destroy(): void {
    this.conn.socket.destroy();
  }

  /** The client's socket has room again: `fn` (once). */
  onDrain(fn: () => void): void {
    this.conn.socket.once('drain', fn);
  }
}

/** One accepted client socket and its request loop. */
export class ClientConnection<T = unknown> implements RequestParserHandler, SocketReader {
  readonly socket: Socket;
  readonly hooks: ConnectionHooks<T>;
  readonly keepAliveField: string;
  /** Coarse ms of the last read or write (the idle timeout counts from it). */
  active: number;
  readonly #set: ClientConnections<T>;
  readonly #parser: RequestParser;
  /** The exchange being answered. */
  #current: ClientExchange<T> | undefined;
  /** Parsed requests waiting for their turn (pipelining). */
  readonly #queue: ClientExchange<T>[] = [];
  /** The exchange whose body the parser is reading. */
  #parsing: ClientExchange<T> | undefined;
  #pauses = 0;
  /** Coarse monotonic ms when the head being read began (0: none), and when the connection went idle. */
  #headSince: number;
  #idleSince: number;
  #served = 0;
  #closed = false;
  #refused = false;
  #upgrade: ClientExchange<T> | undefined;
  #starting = false;

  /**
   * `shared`: the socket is in `onread` mode (accept.ts) and its bytes come through {@link read}, as
   * views of a buffer the next read reuses; else they come as `'data'` events.
   */
  constructor(socket: Socket, set: ClientConnections<T>, hooks: ConnectionHooks<T>, shared = false) {
    this.socket = socket;
    this.#set = set;
    this.hooks = hooks;
    this.keepAliveField = set.keepAliveField;
    this.#headSince = 0;
    this.#idleSince = set.clock.now;
    this.active = set.clock.now;
    this.#parser = new RequestParser(set.settings.maxHeaderSize, this);
    this.#shared = shared;
    if (!shared) socket.on('data', (d: Buffer) => this.#data(d));
    socket.on('error', () => undefined); // 'close' follows
    socket.once('close', () => this.#onClose());
  }

  #remoteAddress: string | undefined;

  /** The client's address (`unknown` when the socket cannot tell), read once per connection. */
  get remoteAddress(): string {
    return (this.#remoteAddress ??= this.socket.remoteAddress ?? 'unknown');
  }

  /** Activity: the idle timeout counts from now. */
  touch(): void {
    this.active = this.#set.clock.now;
  }

  /** True when `ex` is the exchange being answered. */
  current(ex: ClientExchange<T>): boolean {
    return this.#current === ex;
  }

  get idle(): boolean {
    return this.#current === undefined && this.#queue.length === 0;
  }

  // ── RequestParserHandler ──────────────────────────────────────────────────────────────────────

  request(req: ClientRequest): void {
    this.#headSince = 0;
    const ex = new ClientExchange<T>(this, req, this.#set.clock.now);
    this.#parsing = ex;
    this.#queue.push(ex);
  }

  body(chunk: Buffer): void {
    this.#parsing?.bodyData(chunk);
  }

  complete(): void {
    const ex = this.#parsing;
    this.#parsing = undefined;
    ex?.bodyEnd();
  }

  // ── the loop ──────────────────────────────────────────────────────────────────────────────────

  /**
   * The socket's bytes in `onread` mode (valid during the call only). After an upgrade left the loop,
   * they are the tunnel's: emitted as the socket's `'data'` (copied), which is how the tunnel and
   * `pipe()` read it; `pause()`/`resume()` work on an `onread` socket as on any other.
   */
  read(d: Buffer): void {
    if (this.#tunnel) this.socket.emit('data', Buffer.from(d));
    else this.#data(d);
  }

  readonly #shared: boolean;
  #tunnel = false;

  #data(d: Buffer): void {
    if (this.#closed) return; // lingering: what the client still sends is read and dropped
    this.active = this.#set.clock.now;
    if (this.#upgrade !== undefined) {
      // bytes after an upgrade head that waits for its turn: the tunnel's
      const u = this.#upgrade;
      u.rest = u.rest === undefined ? this.#keep(d) : Buffer.concat([u.rest, d]);
      return;
    }
    if (this.#headSince === 0 && this.#parsing === undefined) this.#headSince = this.#set.clock.now || 1;
    const r = this.#parser.feed(d);
    if (r !== undefined) {
      if ('upgrade' in r) {
        const u = this.#queue[this.#queue.length - 1] as ClientExchange<T>;
        u.rest = this.#keep(r.upgrade);
        this.#upgrade = u;
        this.#parsing = undefined;
        this.pause(PAUSE_QUEUE);
      } else {
        this.#refuse(r);
        return;
      }
    }
    if (this.#current === undefined) this.#next();
    else if (this.#queue.length > 0) this.pause(PAUSE_QUEUE);
  }

  /** `d` to keep beyond this read: a copy when it is a view of the shared read buffer. */
  #keep(d: Buffer): Buffer {
    return this.#shared ? Buffer.from(d) : d;
  }

  /** Starts the next parsed request, if it is its turn. */
  #next(): void {
    if (this.#starting) return; // a response finished while its request was being started: the loop below goes on
    this.#starting = true;
    try {
      while (this.#current === undefined && !this.#closed) {
        const ex = this.#queue.shift();
        if (ex === undefined) {
          const refusal = this.#refusal;
          if (refusal !== undefined) this.#answerAndClose(refusal.status, refusal.reason);
          else if (this.#upgrade === undefined) this.unpause(PAUSE_QUEUE);
          return;
        }
        if (ex === this.#upgrade) {
          this.#detach();
          this.hooks.upgrade(ex.req, this.socket, ex.rest ?? Buffer.alloc(0));
          return;
        }
        this.#current = ex;
        const ctx = this.hooks.request(ex);
        // the response may already be over (answered at once): then its `done` is reported here
        if (ex.finished && this.#current !== ex) this.hooks.done(ctx, true);
        else ex.ctx = ctx;
      }
    } finally {
      this.#starting = false;
    }
  }

  /** The response of `ex` was written whole. */
  finish(ex: ClientExchange<T>, close: boolean): void {
    if (this.#current !== ex) return;
    this.#current = undefined;
    this.#served++;
    if (ex.ctx !== undefined) this.hooks.done(ex.ctx, true);
    if (close) {
      this.#end();
      return;
    }
    this.#idleSince = this.#set.clock.now;
    this.#next();
  }

  pause(reason: number): void {
    if (this.#pauses === 0) this.socket.pause();
    this.#pauses |= reason;
  }

  unpause(reason: number): void {
    if ((this.#pauses & reason) === 0) return;
    this.#pauses &= ~reason;
    if (this.#pauses === 0 && !this.#closed) this.socket.resume();
  }

  /**
   * A malformed request: 400 (431, 417) and close. The refusal is the answer of the request it
   * refuses, so requests before it on the connection are answered first (HTTP/1.1 answers in order);
   * when the refused one is the request being answered, a response already under way is cut.
   */
  #refuse(r: Refusal): void {
    if (this.#refused) return;
    this.#refused = true;
    const refused = this.#parsing;
    this.#parsing = undefined;
    if (refused !== undefined && refused === this.#current) {
      this.#answerAndClose(r.status, r.reason);
      return;
    }
    // a request still queued (its body was malformed) is answered by the refusal, not started
    if (refused !== undefined) this.#queue.splice(this.#queue.indexOf(refused), 1);
    this.pause(PAUSE_QUEUE);
    this.#refusal = r;
    if (this.#current === undefined) this.#next();
  }

  /** A refusal waiting for the requests before it to be answered. */
  #refusal: Refusal | undefined;

  /** Answers 408 and closes (a head or body too slow), or cuts a response under way. */
  #timedOut(what: string): void {
    this.#refused = true;
    this.#answerAndClose(408, what);
  }

  /** A plain-text answer of the proxy's own, then close; a response already under way is cut. */
  #answerAndClose(status: number, text: string): void {
    const cur = this.#current;
    if (cur?.responded === true) {
      this.#closed = true;
      this.socket.destroy();
      return;
    }
    const body = `${text}\n`;
    this.#end(
      `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\n${dateHeaderLine()}connection: close\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
    );
    if (cur !== undefined) cur.finished = true; // nothing more is written for it
  }

  /** Checks the timeouts (called by the server's timer with the coarse clock). */
  sweep(now: number): void {
    if (this.#closed) {
      // lingering after its last answer: cut once the client had time to read it
      if (this.#lingerSince !== 0 && now - this.#lingerSince > LINGER_MS) this.socket.destroy();
      return;
    }
    const s = this.#set.settings;
    if (now - this.active > s.idleTimeoutMs) {
      this.#closed = true;
      this.socket.destroy(); // no activity either way (a slow reader, a silent client): the exchange is aborted
      return;
    }
    const cur = this.#current;
    if (cur !== undefined) {
      if (!cur.complete && now - cur.startedAt > s.requestTimeoutMs)
        this.#timedOut(`the request was not received whole within ${s.requestTimeoutMs} ms`);
      return;
    }
    if (this.#queue.length > 0 || this.#upgrade !== undefined) return;
    if (this.#headSince !== 0) {
      if (now - this.#headSince > s.headersTimeoutMs)
        this.#timedOut(`the request head was not received within ${s.headersTimeoutMs} ms`);
      return;
    }
    // a kept-alive connection is closed only after the advertised `Keep-Alive: timeout` (never early
    // by the coarse clock: a client that honours it has stopped reusing the connection by then)
    const limit = this.#served === 0 ? s.headersTimeoutMs : s.keepAliveTimeoutMs + this.#set.clock.intervalMs;
    if (now - this.#idleSince > limit) {
      this.#closed = true;
      this.socket.destroy(); // idle: nothing was asked, nothing to answer
    }
  }

  /**
   * The last answer is written: ends the socket, then keeps reading (and dropping) what the client
   * still sends until it closes too, for up to `LINGER_MS` — closing with unread bytes would reset the
   * connection and could destroy the answer before the client read it (nginx's lingering close). A
   * paused socket would never see the client's end: reading resumes.
   */
  #end(last?: string): void {
    this.#closed = true;
    this.#lingerSince = this.#set.clock.now || 1;
    if (last === undefined) this.socket.end();
    else this.socket.end(last, 'latin1');
    this.#pauses = 0;
    this.socket.resume();
  }

  #lingerSince = 0;

  /** Leaves the loop (an upgrade): the socket is the tunnel's. */
  #detach(): void {
    this.#closed = true;
    if (this.#shared) this.#tunnel = true;
    else this.socket.removeAllListeners('data');
    this.#parser.close();
    this.#set.delete(this);
  }

  #onClose(): void {
    this.#closed = true;
    this.#parser.close();
    if (!this.#set.delete(this)) return; // detached (upgrade): not ours any more
    const cur = this.#current;
    this.#current = undefined;
    this.#queue.length = 0;
    // still current: its response was not written whole (cut, refused, or the client left)
    if (cur?.ctx !== undefined) this.hooks.done(cur.ctx, false);
  }
}

/** The connections of one server, their shared settings and the timeout sweep. */
export class ClientConnections<T = unknown> {
  readonly settings: ClientSettings;
  readonly keepAliveField: string;
  /** The coarse clock, advanced by the server's sweep timer (timestamps of timeouts need no better). */
  readonly clock: SweepClock;
  readonly #all = new Set<ClientConnection<T>>();

  constructor(settings: ClientSettings, clock: SweepClock) {
    this.settings = settings;
    this.clock = clock;
    this.keepAliveField = `keep-alive: timeout=${Math.max(1, Math.floor(settings.keepAliveTimeoutMs / 1000))}\r\n`;
  }

  get size(): number {
    return this.#all.size;
  }

  /** A connection on `socket`; `shared`: in `onread` mode (its bytes come through `read`). */
  add(socket: Socket, hooks: ConnectionHooks<T>, shared = false): ClientConnection<T> {
    const c = new ClientConnection<T>(socket, this, hooks, shared);
    this.#all.add(c);
    return c;
  }

  delete(c: ClientConnection<T>): boolean {
    return this.#all.delete(c);
  }

  sweep(now: number): void {
    for (const c of this.#all) c.sweep(now);
  }

  /** Destroys every connection. */
  destroyAll(): void {
    for (const c of this.#all) c.socket.destroy();
  }
}
