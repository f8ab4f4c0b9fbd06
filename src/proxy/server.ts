/**
 * One proxy worker: an HTTP/1.1 server on raw `net` sockets (client-conn.ts: the connection loop,
 * request-parser.ts: llhttp) whose requests are routed by key through the {@link RoutingTable}
 * and forwarded through raw keep-alive pools (upstream-pool.ts); unavailable destinations hold GET/HEAD (see hold.ts) and
 * answer other methods 502 at once. `drain()` is the reload half of a worker: stop accepting, answer
 * everything in flight or held, then close.
 */
import { connect as netConnect, createServer, type Server, type Socket } from 'node:net';
import { acceptWithSharedBuffer, type SocketReader } from './accept.js';
import type { TimerHandle } from '../clock.js';
import { systemClock, type Clock } from '../clock.js';
import type { ErrorCode } from '../errors.js';
import type { ProxyConfig } from './config.js';
import { HoldQueues, type Held } from './hold.js';
import { extractKey, isValidKey } from './key.js';
import { createProxyMetrics, type ProxyMetrics } from './metrics.js';
import type { RoutingSource } from './routing-source.js';
import { RoutingTable, type Resolution } from './table.js';
import { tunnelWebSocket, WS_SERVICE_RESTART, type WsTunnel } from './ws-close.js';
import { upstreamHead, type UpstreamHead } from './headers.js';
import { nextRequestId } from './request-id.js';
import { Emitter } from '../util/emitter.js';
import { isTimeout, isUnavailable } from './upstream-error.js';
import {
  UpstreamPools,
  type Exchange,
  type SweepClock,
  type UpstreamHandler,
  type UpstreamPool,
} from './upstream-pool.js';
import type { ResponseHead } from './response-framer.js';
import { ClientConnections, type ClientExchange, type ConnectionHooks } from './client-conn.js';
import type { ClientRequest } from './request-parser.js';

/** A pino-compatible logger (only what the proxy uses). */
export interface ProxyLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

const silent: ProxyLogger = { info() {}, warn() {}, error() {} };

export interface ProxyServerOptions {
  readonly config: ProxyConfig;
  readonly source: RoutingSource;
  readonly clock?: Clock;
  readonly log?: ProxyLogger;
}

/** A listening target: `host:port`, or a listening handle passed by the master. */
export type ListenTarget = string | { readonly handle: object };

/** What a request's upstream exchange reports to its server (one object per server, not per request). */
interface ForwardHooks {
  head(ctx: Ctx, head: ResponseHead): void;
  end(ctx: Ctx): void;
  error(ctx: Ctx, err: Error): void;
}

/** A backend origin as the data path needs it, made once. */
interface Backend {
  readonly host: string;
  readonly labels: readonly string[];
  readonly pool: UpstreamPool;
}

const NO_LABELS: readonly string[] = [];

/** One client request through the proxy: held, forwarded (perhaps again), answered. */
class Ctx implements Held, UpstreamHandler {
  readonly hooks: ForwardHooks;
  readonly req: ClientRequest;
  readonly res: ClientExchange<Ctx>;
  readonly id: string;
  readonly holdable: boolean;
  readonly hasBody: boolean;
  key = '';
  destination = '';
  heldAt = 0;
  avoid: { readonly partition: string; readonly token: number } | undefined = undefined;
  timer: TimerHandle | undefined = undefined;
  queued: boolean | undefined = undefined;
  head: UpstreamHead | undefined = undefined;
  responded = false;
  done = false;
  holds = 0;
  /** Sent again on a new connection after a kept-alive one went stale (once). */
  staleRetried = false;
  exchange: Exchange | undefined = undefined;
  /** The attempt under way: where it went, when, and whether the backend answered 421. */
  route: (Resolution & { ok: true }) | undefined = undefined;
  backend = '';
  /** `[backend]`: the upstream latency histogram's labels (one array per backend). */
  labels: readonly string[] = NO_LABELS;
  started = 0;
  misdirected = false;

  constructor(hooks: ForwardHooks, res: ClientExchange<Ctx>, id: string) {
    this.hooks = hooks;
    this.res = res;
    this.req = res.req;
    this.id = id;
    this.hasBody = res.req.hasBody;
    const method = res.req.method;
    this.holdable = (method === 'GET' || method === 'HEAD') && !this.hasBody;
  }

  onHead(head: ResponseHead): void {
    this.hooks.head(this, head);
  }

  onData(chunk: Buffer): boolean {
    if (this.misdirected) return true;
    if (this.res.write(chunk)) return true;
    // one read of the upstream can hold several body pieces: one wait for 'drain' serves them all
    if (!this.#awaitingDrain) {
      this.#awaitingDrain = true;
      this.res.onDrain(() => {
        this.#awaitingDrain = false;
        this.exchange?.resume();
      });
    }
    return false;
  }

  #awaitingDrain = false;

  onEnd(): void {
    this.hooks.end(this);
  }

  onError(err: Error): void {
    this.hooks.error(this, err);
  }

  onReadEnd(): void {
    if (this.responded) this.res.flushHead();
  }
}

/** States: `starting` → `serving` → `draining` → `closed`. */
export type ProxyServerState = 'starting' | 'serving' | 'draining' | 'closed';

export class ProxyServer {
  readonly metrics: ProxyMetrics;
  readonly table: RoutingTable;
  readonly #config: ProxyConfig;
  readonly #clock: Clock;
  readonly #log: ProxyLogger;
  readonly #pools: UpstreamPools;
  readonly #holds: HoldQueues<Ctx>;
  readonly #servers: Server[] = [];
  readonly #sockets = new Set<Socket>();
  readonly #connections: ClientConnections<Ctx>;
  #sweepTimer: TimerHandle | undefined;
  readonly #sweepClock: SweepClock;
  /**
   * Per origin: its `host:port`, metric labels and pool (one lookup per request); an entry goes when
   * the sweep forgets its pool (no connection left), so only backends in use are kept.
   */
  readonly #backends = new Map<string, Backend>();
  readonly #hooks: ConnectionHooks<Ctx>;
  readonly #forwardHooks: ForwardHooks = {
    head: (ctx, head) => this.#upstreamHead(ctx, head),
    end: (ctx) => this.#upstreamEnd(ctx),
    error: (ctx, err) => this.#upstreamError(ctx, err),
  };
  /** WebSockets by key and backend: closed with 1012 on drain, or when their key's owner changes. */
  readonly #websockets = new Set<{ key: string; origin: string; tunnel: WsTunnel }>();
  readonly #unsubscribe: () => void;
  #state: ProxyServerState = 'starting';
  #addresses: string[] = [];
  #inFlight = 0;
  #closing: Promise<void> | undefined;
  #idleWaiters: (() => void)[] = [];
  #heldWaiters: (() => void)[] = [];
  #afterHeld = false;
  /** `held`: a request was held (for the held-queue publisher, {@link onHeld}). */
  readonly #events = new Emitter<{ held: [] }>();

  constructor(options: ProxyServerOptions) {
    this.#config = options.config;
    this.#clock = options.clock ?? systemClock;
    this.#log = options.log ?? silent;
    this.table = new RoutingTable(options.source, this.#config.partitions);
    const c = this.#config.client;
    const u = this.#config.upstream;
    this.#sweepClock = {
      now: this.#clock.monotonic(),
      intervalMs: sweepInterval(
        Math.min(
          c.headersTimeoutMs,
          c.requestTimeoutMs,
          c.keepAliveTimeoutMs,
          c.idleTimeoutMs,
          u.connectTimeoutMs,
          u.headersTimeoutMs,
          u.bodyTimeoutMs,
          u.keepAliveTimeoutMs,
        ),
      ),
    };
    this.#pools = new UpstreamPools(u, this.#sweepClock);
    this.#connections = new ClientConnections<Ctx>(c, this.#sweepClock);
    this.#hooks = {
      request: (ex) => this.#handle(ex),
      done: (ctx, finished) => this.#closed(ctx, finished),
      upgrade: (req, socket, rest) => this.#upgrade(req, socket, rest),
      draining: () => this.#state === 'draining',
    };
    this.#holds = new HoldQueues<Ctx>(this.#config.hold, this.#clock, {
      resolve: (key) => this.table.resolve(key),
      release: (ctx) => {
        this.metrics.holdSeconds.observe(
          { outcome: 'released' },
          (this.#clock.monotonic() - ctx.heldAt) / 1000,
        );
        this.#attempt(ctx);
        this.#checkIdle();
      },
      expire: (ctx) => this.#expire(ctx),
    });
    this.metrics = createProxyMetrics(
      () => options.source,
      () => this.#holds.size,
    );
    this.#unsubscribe = options.source.subscribe(() => {
      this.#holds.poke();
      if (this.#websockets.size > 0) this.#moveWebSockets();
    });
  }

  get state(): ProxyServerState {
    return this.#state;
  }

  /** `host:port` of each listener (after {@link listen}). */
  get addresses(): readonly string[] {
    return this.#addresses;
  }

  /** Starts listening on each target; resolves when all accept connections. */
  async listen(targets: readonly ListenTarget[]): Promise<readonly string[]> {
    for (const target of targets) {
      const server = createServer({ noDelay: true }, (socket: Socket) => this.#accept(socket, false));
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        const done = (): void => {
          server.off('error', reject);
          resolve();
        };
        const fd = typeof target === 'string' ? /^fd:(\d+)$/.exec(target) : null;
        if (fd !== null) {
          server.listen({ fd: Number(fd[1]) }, done);
        } else if (typeof target === 'string') {
          const { host, port } = splitHostPort(target);
          server.listen({ host, port }, done);
        } else {
          server.listen(target.handle, done);
        }
      });
      // client sockets in `onread` mode: reads skip the stream machinery (accept.ts)
      acceptWithSharedBuffer(server, (socket) => this.#accept(socket, true));
      const a = server.address();
      this.#addresses.push(
        a !== null && typeof a === 'object'
          ? `${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`
          : String(a),
      );
      this.#servers.push(server);
    }
    this.#state = 'serving';
    return this.#addresses;
  }

  /** A client connection (`shared`: its socket is in `onread` mode, accept.ts). */
  #accept(socket: Socket, shared: boolean): SocketReader | undefined {
    if (this.#state === 'closed') {
      socket.destroy();
      return undefined;
    }
    this.#armSweep();
    this.#sockets.add(socket);
    socket.once('close', () => {
      this.#sockets.delete(socket);
      this.#checkIdle();
    });
    return this.#connections.add(socket, this.#hooks, shared);
  }

  /** What the admin API shows. */
  status(): Record<string, unknown> {
    const source = this.table.source;
    return {
      pid: process.pid,
      state: this.#state,
      listen: this.#addresses,
      connections: this.#sockets.size,
      inFlight: this.#inFlight,
      held: this.#holds.size,
      routeRevision: source.revision,
      routeAgeMs: source.updatedAt === 0 ? null : Math.round(performance.now() - source.updatedAt),
      backends: this.#pools.origins,
    };
  }

  /** Held requests per destination. */
  held(): Record<string, number> {
    return this.#holds.sizes();
  }

  /** Calls `listener` each time a request is held (so {@link held} changed); returns an unsubscribe function. */
  onHeld(listener: () => void): () => void {
    return this.#events.on('held', listener);
  }

  /** Where `key` goes now and why. */
  explain(key: string): Resolution & { key: string } {
    return { key, ...this.table.resolve(key) };
  }

  /**
   * Stops accepting, answers everything in flight and held (new responses carry `Connection: close`,
   * idle keep-alive connections end at their keep-alive timeout, which clients know from the
   * `Keep-Alive` header, so no client reuses a connection the proxy is closing), then closes. After
   * `timeoutMs`, whatever is left is cut.
   */
  async drain(timeoutMs = this.#config.drainTimeoutMs): Promise<void> {
    if (this.#state === 'closed') return;
    if (this.#state !== 'draining') {
      this.#state = 'draining';
      // stop accepting only: idle keep-alive connections are closed by their keep-alive timeout (closing
      // them at once, as http.Server#close does, races with a client sending its next request)
      for (const s of this.#servers) s.close();
      for (const ws of this.#websockets) ws.tunnel.close(WS_SERVICE_RESTART);
      this.#log.info({ connections: this.#sockets.size, held: this.#holds.size }, 'draining');
    }
    await new Promise<void>((resolve) => {
      const timer = this.#clock.setTimeout(() => resolve(), timeoutMs);
      this.#idleWaiters.push(() => {
        this.#clock.clearTimeout(timer);
        resolve();
      });
      this.#checkIdle();
    });
    // Held requests are never cut by the drain: each ends by its own deadline (hold.timeout, with
    // the configured answer) if its destination does not come back first.
    if (this.#holds.size > 0) {
      await new Promise<void>((resolve) => this.#heldWaiters.push(resolve));
      this.#afterHeld = true;
      // the released ones are forwarded now: give them (and nothing new) another drain window
      await new Promise<void>((resolve) => {
        const timer = this.#clock.setTimeout(() => resolve(), timeoutMs);
        this.#idleWaiters.push(() => {
          this.#clock.clearTimeout(timer);
          resolve();
        });
        this.#checkIdle();
      });
    }
    await this.close();
  }

  /** Closes now: every connection and held request is cut. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#state = 'closed';
      this.#unsubscribe();
      this.#holds.close();
      for (const ctx of [...this.#holds.all()]) {
        this.#holds.remove(ctx);
        this.#holds.finish(ctx);
      }
      if (this.#sweepTimer !== undefined) this.#clock.clearTimeout(this.#sweepTimer);
      for (const s of this.#servers) s.close(() => undefined);
      this.#connections.destroyAll();
      for (const socket of this.#sockets) socket.destroy();
      this.#pools.close();
    })();
    return this.#closing;
  }

  #count(backend: string, status: number | string): void {
    this.metrics.countRequest(backend, status);
  }

  #checkIdle(): void {
    if (this.#state !== 'draining' || this.#holds.size > 0) return;
    for (const w of this.#heldWaiters.splice(0)) w();
    // after the held requests were waited for, only requests in flight are (their responses carry
    // `Connection: close`; the idle connections left are cut by close())
    if (this.#sockets.size > 0 && !(this.#afterHeld && this.#inFlight === 0)) return;
    const waiters = this.#idleWaiters;
    this.#idleWaiters = [];
    for (const w of waiters) w();
  }

  /**
   * Starts the sweep (the coarse clock set to now) if it is not running: a client connection arrived.
   * Every upstream connection serves, or served, a client connection, so this is the one place.
   */
  #armSweep(): void {
    if (this.#sweepTimer !== undefined || this.#state === 'closed') return;
    this.#sweepClock.now = this.#clock.monotonic();
    this.#sweepTimer = this.#clock.setTimeout(() => this.#sweep(), this.#sweepClock.intervalMs);
  }

  /**
   * The connections' timeouts and coarse clock, every `intervalMs` while there is a client or an
   * upstream connection; with neither it stops (an idle proxy has no timer to wake it) and the next
   * client connection starts it again.
   */
  #sweep(): void {
    this.#sweepTimer = undefined;
    if (this.#state === 'closed') return;
    const now = this.#clock.monotonic();
    this.#sweepClock.now = now;
    this.#connections.sweep(now);
    this.#pools.sweep(now, (origin) => this.#backends.delete(origin));
    if (this.#connections.size === 0 && !this.#pools.busy) return;
    this.#sweepTimer = this.#clock.setTimeout(() => this.#sweep(), this.#sweepClock.intervalMs);
  }

  #handle(res: ClientExchange<Ctx>): Ctx {
    const req = res.req;
    const given = req.headers['x-request-id'];
    const id = given !== undefined && given.length > 0 && given.length <= 200 ? given : nextRequestId();
    const ctx = new Ctx(this.#forwardHooks, res, id);
    this.#inFlight++;
    let key = extractKey(this.#config.key, req.url, req.headers);
    if (key === undefined || !isValidKey(key)) {
      if (this.#config.defaultKey !== undefined && key === undefined) key = this.#config.defaultKey;
      else {
        this.#reply(
          ctx,
          400,
          'MUSTER_NO_ROUTING_KEY',
          key === undefined
            ? `the request has no routing key (the proxy reads it from ${this.#config.keySource}) and no defaultKey is configured`
            : `the routing key from ${this.#config.keySource} must be 1–128 characters without '/', whitespace or control characters`,
        );
        return ctx;
      }
    }
    ctx.key = key;
    this.#attempt(ctx);
    return ctx;
  }

  /**
   * An upgrade (WebSocket): routed by the same key, then bytes are piped both ways. Not held: an
   * unavailable destination answers 502 at once (clients reconnect by themselves); a backend that does
   * not accept within `upstream.connectTimeout`, or does not answer within `upstream.headersTimeout`,
   * 504. The socket comes
   * paused; the tunnel resumes it once the backend answered `101` (docs/proxy.md, WebSockets).
   */
  #upgrade(req: ClientRequest, socket: Socket, head: Buffer): void {
    const refuse = (status: string, why: string): void => {
      this.#count('-', status.slice(0, 3));
      socket.end(
        `HTTP/1.1 ${status}\r\nconnection: close\r\ncontent-type: text/plain\r\ncontent-length: ${Buffer.byteLength(why)}\r\n\r\n${why}`,
      );
      socket.resume();
    };
    socket.on('error', () => socket.destroy());
    if (this.#state !== 'serving')
      return refuse('503 Service Unavailable', 'the proxy is draining; reconnect');
    if (req.method === 'CONNECT')
      return refuse('405 Method Not Allowed', 'the proxy does not tunnel CONNECT');
    const raw = extractKey(this.#config.key, req.url, req.headers);
    const key = raw === undefined ? this.#config.defaultKey : isValidKey(raw) ? raw : undefined;
    if (key === undefined)
      return refuse('400 Bad Request', `no valid routing key (${this.#config.keySource})`);
    const r = this.table.resolve(key);
    if (!r.ok || this.#holds.isDown(r.origin))
      return refuse('502 Bad Gateway', 'the destination is unavailable');
    const url = new URL(r.origin);
    const backend = url.host;
    const upstream = netConnect(Number(url.port || 80), url.hostname);
    let connected = false;
    // the backend must accept within upstream.connectTimeout and answer (any byte of its response
    // head) within upstream.headersTimeout, as for any request; else 504 and both sockets go
    const u = this.#config.upstream;
    let timedOut = false;
    const giveUp = (why: string): void => {
      timedOut = true;
      refuse('504 Gateway Timeout', why);
      upstream.destroy();
    };
    let timer: TimerHandle | undefined = this.#clock.setTimeout(
      () => giveUp(`backend ${backend} did not accept the connection within ${u.connectTimeoutMs} ms`),
      u.connectTimeoutMs,
    );
    const stopTimer = (): void => {
      if (timer !== undefined) this.#clock.clearTimeout(timer);
      timer = undefined;
    };
    upstream.once('data', stopTimer);
    socket.once('close', stopTimer);
    upstream.once('connect', () => {
      connected = true;
      stopTimer();
      timer = this.#clock.setTimeout(
        () => giveUp(`backend ${backend} did not answer the upgrade within ${u.headersTimeoutMs} ms`),
        u.headersTimeoutMs,
      );
      const id = req.headers['x-request-id'];
      const lines = [`${req.method} ${req.url} HTTP/1.1`];
      for (let i = 0; i < req.rawHeaders.length; i += 2) {
        const name = (req.rawHeaders[i] as string).toLowerCase();
        if (name === 'x-forwarded-for' || name === 'x-request-id') continue;
        lines.push(`${req.rawHeaders[i] as string}: ${req.rawHeaders[i + 1] as string}`);
      }
      const xff = req.headers['x-forwarded-for'];
      const client = socket.remoteAddress ?? 'unknown';
      lines.push(`x-forwarded-for: ${xff === undefined ? client : `${xff}, ${client}`}`);
      lines.push(`x-request-id: ${id !== undefined && id !== '' ? id : nextRequestId()}`);
      upstream.write(`${lines.join('\r\n')}\r\n\r\n`);
      this.#count(backend, '101');
      if (!/^websocket$/i.test(String(req.headers['upgrade']))) {
        // another protocol: bytes only, once the backend switched (a drain cuts it at its timeout)
        tunnelWebSocket(socket, upstream, head, this.#clock, false);
        return;
      }
      const ws = { key, origin: r.origin, tunnel: tunnelWebSocket(socket, upstream, head, this.#clock) };
      this.#websockets.add(ws);
      socket.once('close', () => this.#websockets.delete(ws));
    });
    upstream.on('error', () => {
      stopTimer();
      if (timedOut) return;
      if (connected) socket.destroy();
      else {
        this.#holds.markDown(r.origin);
        refuse('502 Bad Gateway', `backend ${backend} is unavailable`);
      }
    });
    upstream.on('close', () => {
      stopTimer();
      if (!timedOut) socket.destroy(); // (after a 504 the client's socket ends once it is written)
    });
    socket.on('close', () => upstream.destroy());
  }

  /** A route change: WebSockets whose key now goes elsewhere (or nowhere) get 1012 and reconnect. */
  #moveWebSockets(): void {
    for (const ws of this.#websockets) {
      const r = this.table.resolve(ws.key);
      if (!r.ok || r.origin !== ws.origin) ws.tunnel.close(WS_SERVICE_RESTART);
    }
  }

  /** The request's exchange is over: its response was written whole (`finished`), or the client left. */
  #closed(ctx: Ctx, finished: boolean): void {
    this.#inFlight--;
    if (this.#afterHeld) this.#checkIdle();
    // a request that was held keeps its hold deadline while it is tried (it may be held again);
    // once its exchange is over the deadline goes, or its timer would outlive it by up to hold.timeout
    if (ctx.holds > 0) this.#holds.finish(ctx);
    if (ctx.done && finished) return;
    ctx.done = true;
    if (finished) return;
    // the client went away before its response was complete
    if (this.#holds.remove(ctx)) {
      this.metrics.holdSeconds.observe({ outcome: 'gone' }, (this.#clock.monotonic() - ctx.heldAt) / 1000);
      this.#checkIdle();
    }
    ctx.exchange?.abort();
  }

  #attempt(ctx: Ctx): void {
    if (ctx.done) return;
    const r = this.table.resolve(ctx.key);
    if (!r.ok) {
      this.#unavailable(ctx, r.destination, reasonText(r));
      return;
    }
    if (ctx.holdable && this.#holds.isDown(r.origin)) {
      this.#unavailable(ctx, r.destination, `backend ${r.origin} refused a connection moments ago`);
      return;
    }
    if (ctx.avoid !== undefined && ctx.avoid.partition === r.partition && ctx.avoid.token === r.token) {
      this.#unavailable(ctx, r.destination, `instance ${r.instance} said it no longer owns the partition`);
      return;
    }
    this.#forward(ctx, r);
  }

  #forward(ctx: Ctx, r: Resolution & { ok: true }, newConnection = false): void {
    let backend = this.#backends.get(r.origin);
    if (backend === undefined) {
      const host = r.origin.slice(r.origin.indexOf('//') + 2);
      backend = { host, labels: [host], pool: this.#pools.get(r.origin) };
      this.#backends.set(r.origin, backend);
    }
    ctx.head ??= upstreamHead(ctx.req, ctx.id, 'http', backend.host, ctx.res.conn.remoteAddress);
    ctx.route = r;
    ctx.backend = backend.host;
    ctx.labels = backend.labels;
    ctx.misdirected = false;
    ctx.started = performance.now();
    ctx.exchange = backend.pool.request(
      {
        head: ctx.head.head,
        body: ctx.hasBody ? ctx.res : null,
        chunked: ctx.head.chunked,
        noResponseBody: ctx.req.method === 'HEAD',
        newConnection,
      },
      ctx,
    );
  }

  #upstreamHead(ctx: Ctx, { status, statusText, fields, length }: ResponseHead): void {
    const r = ctx.route as Resolution & { ok: true };
    this.metrics.upstreamSeconds.observe(ctx.labels, (performance.now() - ctx.started) / 1000);
    if (status === 421 && ctx.holdable && r.partition !== undefined && r.token !== undefined) {
      // 421 Misdirected Request (MUSTER_NOT_OWNER): the backend released the partition before
      // the proxy's view showed it. Nothing was done; hold the GET until the table shows the
      // partition's next owner (its token differs), then send it there.
      ctx.avoid = { partition: r.partition, token: r.token };
      ctx.misdirected = true;
      return;
    }
    ctx.res.writeHead(status, statusText, fields, length);
    ctx.responded = true;
    this.#count(ctx.backend, status);
  }

  #upstreamEnd(ctx: Ctx): void {
    if (ctx.done) return;
    if (ctx.misdirected) {
      const r = ctx.route as Resolution & { ok: true };
      this.#count(ctx.backend, '421-held');
      this.#unavailable(ctx, r.destination, `instance ${r.instance} said it no longer owns the partition`);
      return;
    }
    ctx.done = true;
    ctx.res.end();
  }

  #upstreamError(ctx: Ctx, err: Error): void {
    if (ctx.done) return;
    if (ctx.responded) {
      ctx.res.destroy();
      return;
    }
    const r = ctx.route as Resolution & { ok: true };
    const backend = ctx.backend;
    if ((err as { code?: string }).code === 'UPSTREAM_STALE') {
      // the backend closed an idle kept-alive socket as the request went out: it is there, so a GET
      // or HEAD goes again at once on a new connection (once); nothing else is replayed
      if (ctx.holdable && !ctx.staleRetried) {
        ctx.staleRetried = true;
        this.#forward(ctx, r, true);
        return;
      }
      this.#unavailable(
        ctx,
        r.destination,
        `backend ${backend} closed a kept-alive connection before answering`,
      );
      return;
    }
    if (isUnavailable(err)) {
      this.#holds.markDown(r.origin);
      this.#log.warn({ backend, err: err.message, destination: r.destination }, 'backend unavailable');
      this.#unavailable(
        ctx,
        r.destination,
        `backend ${backend} is unavailable (${(err as { code?: string }).code ?? 'error'})`,
      );
    } else if (isTimeout(err)) {
      this.#reply(ctx, 504, 'MUSTER_TIMEOUT', `backend ${backend} did not answer in time`, backend);
    } else {
      this.#reply(
        ctx,
        502,
        'MUSTER_UPSTREAM_UNAVAILABLE',
        `backend ${backend} failed: ${err.message}`,
        backend,
      );
    }
  }

  #unavailable(ctx: Ctx, destination: string, why: string): void {
    if (!ctx.holdable) {
      this.#reply(
        ctx,
        502,
        'MUSTER_UPSTREAM_UNAVAILABLE',
        `${why}; ${ctx.req.method} requests are not held or replayed`,
      );
      return;
    }
    const again = ctx.holds > 0;
    if (!again) ctx.heldAt = this.#clock.monotonic();
    ctx.destination = destination;
    if (this.#holds.add(ctx, again) === 'full') {
      this.#reply(ctx, 503, 'MUSTER_HOLD_FULL', `the proxy holds as many requests as it may (${why})`, '-', {
        'retry-after': String(this.#config.hold.retryAfterSeconds),
      });
      return;
    }
    ctx.holds++;
    this.#events.emit('held');
  }

  #expire(ctx: Ctx): void {
    this.metrics.holdSeconds.observe({ outcome: 'timeout' }, (this.#clock.monotonic() - ctx.heldAt) / 1000);
    const h = this.#config.hold;
    if (h.timeoutBody !== undefined) {
      this.#send(ctx, h.timeoutStatus, h.timeoutBody, 'text/plain; charset=utf-8', '-');
    } else {
      this.#reply(
        ctx,
        h.timeoutStatus,
        'MUSTER_HOLD_TIMEOUT',
        `no reachable destination for this key within ${h.timeoutMs} ms`,
      );
    }
    this.#checkIdle();
  }

  #reply(
    ctx: Ctx,
    status: number,
    code: ErrorCode,
    message: string,
    backend = '-',
    headers: Record<string, string> = {},
  ): void {
    const body = JSON.stringify({
      error: { code, message, details: { key: ctx.key || undefined, requestId: ctx.id } },
    });
    this.#send(ctx, status, `${body}\n`, 'application/json', backend, headers);
  }

  #send(
    ctx: Ctx,
    status: number,
    body: string,
    type: string,
    backend: string,
    headers: Record<string, string> = {},
  ): void {
    if (ctx.done || ctx.res.responded) return;
    ctx.done = true;
    this.#holds.finish(ctx);
    this.#count(backend, status);
    let fields = `content-type: ${type}\r\nx-request-id: ${ctx.id}\r\n`;
    for (const name in headers) fields += `${name}: ${headers[name] as string}\r\n`;
    ctx.res.send(status, fields, body);
  }
}

function reasonText(r: Resolution & { ok: false }): string {
  switch (r.reason) {
    case 'no-spec':
      return 'the service has no partition spec yet';
    case 'no-owner':
      return `partition ${r.partition ?? '?'} has no owner (mid hand-off)`;
    case 'moving':
      return `partition ${r.partition ?? '?'} is moving to a new owner`;
    case 'no-address':
      return `instance ${r.instance ?? '?'} has published no address`;
  }
}

/**
 * How often the timeouts are checked: a quarter of the shortest, between 50 and 250 ms (node:http
 * checks its headers and request timeouts the same way, `connectionsCheckingInterval`). The interval is
 * also the coarse clock's grain: an idle upstream socket is reused only up to its idle time minus one
 * interval, so a backend's short `Keep-Alive: timeout=1` still leaves 750 ms of reuse.
 */
function sweepInterval(shortestMs: number): number {
  return Math.max(50, Math.min(250, Math.floor(shortestMs / 4)));
}

/** Splits `host:port` (IPv6 in brackets). */
export function splitHostPort(address: string): { host: string; port: number } {
  const i = address.lastIndexOf(':');
  const host = address.slice(0, i).replace(/^\[(.*)\]$/, '$1');
  return { host: host === '' ? '0.0.0.0' : host, port: Number(address.slice(i + 1)) };
}
