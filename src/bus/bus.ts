/**
 * A bus node: one listener, one connection per peer, the services this node serves, the topics it
 * subscribes to, and the calls and publications it makes (brief §9, docs/bus.md).
 */
import { X509Certificate } from 'node:crypto';
import {
  createServer,
  connect as netConnect,
  isIP,
  type AddressInfo,
  type Server,
  type Socket,
} from 'node:net';
import {
  connect as tlsConnect,
  createSecureContext,
  createServer as createTlsServer,
  type Server as TlsServer,
  type TLSSocket,
} from 'node:tls';
import { type Clock, systemClock } from '../clock.js';
import { invalidArgument, isMusterError, MusterError, throwIfAborted } from '../errors.js';
import {
  Balancer,
  checkAddress,
  checkServiceName,
  defaultInstanceId,
  join,
  openSession,
  type Instance,
  type InstanceView,
  isHealthy,
  type Session,
  watchInstances,
} from '../membership/index.js';
import { joinPartitioned, stderrLogger, type JoinPartitionedOptions } from '../partitions/index.js';
import type { Store } from '../store/index.js';
import { abortable, onAbort } from '../util/abort.js';
import { toMillis } from '../util/duration.js';
import type { CallSignal } from './call-signal.js';
import { Emitter, type Listenable } from '../util/emitter.js';
import { bodyOfError, Connection, type ConnectionHost, type RequestBody } from './connection.js';
import { encodeFrame, Kind } from './frame.js';
import { BusMetrics } from './metrics.js';
import { Topics } from './pubsub.js';
import { noInstance, timeoutError } from './bus-errors.js';
import { KeyedRouter } from './routing.js';
import { ServedService } from './served.js';
import {
  type BusOptions,
  type BusTlsOptions,
  type CallOptions,
  DEFAULT_CALL_TIMEOUT_MS,
  DEFAULT_CONNECT_TIMEOUT_MS,
  DEFAULT_DOWN_BACKOFF_MS,
  DEFAULT_HEARTBEAT_INTERVAL_MS,
  DEFAULT_HEARTBEAT_TIMEOUT_MS,
  DEFAULT_MAX_FRAME_BYTES,
  DEFAULT_MAX_HELD_CALLS,
  DEFAULT_MAX_IN_FLIGHT,
  DEFAULT_MAX_QUEUE_BYTES,
  type DropEvent,
  type Handler,
  type BusPublishOptions,
  type PublishResult,
  type ResolvedBusOptions,
  type SubscribeOptions,
  type SubscriptionHandler,
} from './types.js';

const EMPTY_POOL: ReadonlySet<string> = new Set();

/** A service's callable instances, for one version of its view. */
interface Candidates {
  readonly source: readonly Instance[];
  readonly healthy: readonly Instance[];
  readonly local: ReadonlySet<Instance>;
}

/** The tag every instance record written by a bus carries (`muster bus ls` looks for it). */
export const BUS_TAG = 'muster-bus';
/** 5 s for running handlers to finish when a service stops being served. */
export const DEFAULT_SERVE_GRACE_MS = 5000;

export interface ServeOptions {
  /** Tags added to the instance record. */
  tags?: readonly string[];
  /** Relative share of calls. Default: 1. */
  weight?: number;
  /** Default: {@link DEFAULT_MAX_IN_FLIGHT}. */
  maxInFlight?: number;
  /**
   * Serve a partitioned service: the node joins partition ownership (`joinPartitioned`) with these
   * options and accepts keyed calls only for partitions it owns, with their exact fencing token.
   */
  partitions?: Omit<JoinPartitionedOptions, 'service' | 'address' | 'id' | 'root' | 'onAcquire'> & {
    onAcquire?: JoinPartitionedOptions['onAcquire'];
  };
}

/** A served service, as returned by {@link Bus.serve}. */
export interface Serving {
  readonly service: string;
  /** The partitioned handle (keyed services). */
  readonly partitions: import('../partitions/index.js').PartitionedHandle | undefined;
  /** Stops serving: leaves the service, aborts running handlers' signals, waits for them (bounded). */
  close(): Promise<void>;
}

/** Events of a {@link Bus}. */
export interface BusEvents extends Record<string, unknown[]> {
  /** A publication was dropped for one subscriber (never silently). */
  dropped: [event: DropEvent];
  /** A connection closed. */
  disconnected: [peer: string, error: MusterError];
  error: [error: unknown];
}

/**
 * Opens a bus node: listens (port 0 by default) and opens the session its records live under.
 * Throws `MUSTER_INVALID_ARGUMENT` for bad options and the store's errors.
 */
export async function openBus(store: Store, options: BusOptions = {}): Promise<Bus> {
  const o = resolve(options);
  if (options.advertise !== undefined) checkAddress(options.advertise);
  const server = createServer();
  const host = options.host ?? '127.0.0.1';
  await new Promise<void>((ok, fail) => {
    server.once('error', fail);
    server.listen({ host, port: options.port ?? 0 }, () => {
      server.off('error', fail);
      ok();
    });
  });
  const bound = server.address() as AddressInfo;
  const advertised =
    options.advertiseHost ?? (bound.family === 'IPv6' ? `[${bound.address}]` : bound.address);
  let session: Session;
  try {
    session = await openSession(store, {
      ...(options.ttl === undefined ? {} : { ttl: options.ttl }),
      clock: o.clock,
    });
  } catch (err) {
    server.close();
    throw err;
  }
  return new Bus(store, server, session, options.advertise ?? `${advertised}:${bound.port}`, options, o);
}

function positive(value: number | undefined, fallback: number, what: string): number {
  const v = value ?? fallback;
  if (!Number.isSafeInteger(v) || v < 1)
    throw invalidArgument(`${what} must be a positive integer, got ${v}`);
  return v;
}

function resolve(options: BusOptions): ResolvedBusOptions {
  const hbi = toMillis(options.heartbeatInterval ?? DEFAULT_HEARTBEAT_INTERVAL_MS, 'heartbeatInterval');
  const hbt = toMillis(options.heartbeatTimeout ?? DEFAULT_HEARTBEAT_TIMEOUT_MS, 'heartbeatTimeout');
  if (hbt <= hbi)
    throw invalidArgument(`heartbeatTimeout (${hbt} ms) must exceed heartbeatInterval (${hbi} ms)`);
  if (options.token !== undefined && (typeof options.token !== 'string' || options.token.length === 0))
    throw invalidArgument('token must be a non-empty string');
  return {
    maxFrameBytes: positive(options.maxFrameBytes, DEFAULT_MAX_FRAME_BYTES, 'maxFrameBytes'),
    maxQueueBytes: positive(options.maxQueueBytes, DEFAULT_MAX_QUEUE_BYTES, 'maxQueueBytes'),
    heartbeatIntervalMs: hbi,
    heartbeatTimeoutMs: hbt,
    callTimeoutMs: toMillis(options.callTimeout ?? DEFAULT_CALL_TIMEOUT_MS, 'callTimeout'),
    connectTimeoutMs: toMillis(options.connectTimeout ?? DEFAULT_CONNECT_TIMEOUT_MS, 'connectTimeout'),
    maxHeldCalls: positive(options.maxHeldCalls, DEFAULT_MAX_HELD_CALLS, 'maxHeldCalls'),
    token: options.token,
    tls: checkTls(options.tls),
    clock: options.clock ?? systemClock,
    logger: options.logger ?? stderrLogger,
  };
}

function checkTls(tls: BusTlsOptions | undefined): BusTlsOptions | undefined {
  if (tls === undefined) return undefined;
  const pem = (v: unknown): boolean => (typeof v === 'string' && v.length > 0) || Buffer.isBuffer(v);
  if (typeof tls !== 'object' || tls === null || !pem(tls.cert) || !pem(tls.key))
    throw invalidArgument('tls needs a PEM cert and key (strings or buffers)');
  try {
    createSecureContext(secureContextOptions(tls));
  } catch (err) {
    throw invalidArgument(`tls material is not usable: ${(err as Error).message}`);
  }
  return tls;
}

function secureContextOptions(tls: BusTlsOptions): import('node:tls').SecureContextOptions {
  return {
    cert: tls.cert,
    key: tls.key,
    ...(tls.ca === undefined ? {} : { ca: tls.ca as string | Buffer | (string | Buffer)[] }),
  };
}

/** The first byte of a TLS handshake record (a ClientHello): how a TLS node tells a plain dialer. */
const TLS_HANDSHAKE_RECORD = 0x16;

/** A TLS failure of the connection to (or from) `peer` as a coded error. */
function tlsError(peer: string, err: Error): MusterError {
  return new MusterError('MUSTER_TLS_HANDSHAKE', `TLS with bus peer ${peer} failed: ${err.message}`, {
    cause: err,
    details: { peer, sent: false },
  });
}

/** A peer refused (or was refused): logged, since no call may be there to report it. */
function isRefusal(err: MusterError): boolean {
  return (
    isMusterError(err, 'MUSTER_PROTOCOL') ||
    isMusterError(err, 'MUSTER_PERMISSION_DENIED') ||
    isMusterError(err, 'MUSTER_TLS_HANDSHAKE')
  );
}

/** A bus node. Create with {@link openBus}. */
export class Bus implements Listenable<BusEvents> {
  /** This node's id (the instance id in its records). */
  readonly id: string;
  /** `host:port` peers connect to. */
  readonly address: string;
  readonly metrics: BusMetrics;
  readonly store: Store;
  readonly root: string | undefined;
  readonly session: Session;
  readonly #server: Server;
  readonly #o: ResolvedBusOptions;
  readonly #events = new Emitter<BusEvents>();
  /** Open (or opening) connections by peer address. */
  readonly #peers = new Map<string, Connection>();
  readonly #connecting = new Map<string, Promise<Connection>>();
  readonly #all = new Set<Connection>();
  readonly #everConnected = new Set<string>();
  /** Addresses whose connection failed, until this monotonic time. */
  readonly #down = new Map<string, number>();
  readonly #served = new Map<string, ServedService>();
  readonly #views = new Map<string, InstanceView>();
  readonly #balancers = new Map<string, Balancer>();
  /** Views that have listed (so a call need not wait on `ready`). */
  readonly #readyViews = new Map<string, InstanceView>();
  readonly #candidates = new Map<string, Candidates>();
  #pool: ReadonlySet<string> = EMPTY_POOL;
  readonly #router: KeyedRouter;
  readonly #topics: Topics;
  #closing: Promise<void> | undefined;

  /** @internal Use {@link openBus}. */
  constructor(
    store: Store,
    server: Server,
    session: Session,
    address: string,
    options: BusOptions,
    o: ResolvedBusOptions,
  ) {
    this.store = store;
    this.#server = server;
    this.session = session;
    this.address = address;
    this.#o = o;
    this.root = options.root;
    this.id = options.id ?? defaultInstanceId();
    this.metrics = new BusMetrics(options.metrics, options.statsd, {
      queues: () => this.#queues(),
    });
    const host: ConnectionHost = {
      node: this.id,
      address,
      options: o,
      opened: (conn) => this.#opened(conn),
      request: (conn, id, body, call) => this.#dispatch(conn, id, body, call),
      publish: (conn, ackId, body) => this.#topics.receive(conn, ackId, body),
      unconfirmed: (conn, lost) => this.#topics.unconfirmed(conn, lost),
      closed: (conn, err) => this.#closed(conn, err),
    };
    const accept = (socket: Socket): void => {
      const conn = new Connection(host, socket);
      this.#all.add(conn);
      this.metrics.connection('in', 'open');
    };
    this.#tls = o.tls;
    if (o.tls === undefined) server.on('connection', accept);
    else {
      const mutual = o.tls.mutual === true;
      this.#tlsServer = createTlsServer({
        ...secureContextOptions(o.tls),
        requestCert: mutual,
        // Checked below instead, so that a refused dialer gets a coded reason (with TLS 1.3 it has
        // finished its side of the handshake before the server judges its certificate).
        rejectUnauthorized: false,
        handshakeTimeout: o.connectTimeoutMs,
      });
      this.#tlsServer.on('secureConnection', (secure: TLSSocket) => {
        if (this.#closing !== undefined) secure.destroy();
        else if (mutual && !secure.authorized) {
          const err = new MusterError(
            'MUSTER_TLS_HANDSHAKE',
            `bus peer ${address} does not trust the dialing node's certificate: ${String(secure.authorizationError)}`,
            { details: { peer: address, sent: false } },
          );
          this.#refused(`${secure.remoteAddress}:${secure.remotePort}`, err);
          secure.on('error', () => undefined);
          secure.end(encodeFrame(Kind.Error, 0, bodyOfError(err, 'bus')));
        } else accept(secure);
      });
      this.#tlsServer.on('tlsClientError', (err: Error, secure: TLSSocket) => {
        this.#refused(`${secure.remoteAddress}:${secure.remotePort}`, tlsError('a dialing node', err));
      });
      server.on('connection', (socket) => this.#acceptTls(socket));
    }
    this.#host = host;
    this.#router = new KeyedRouter(this, o);
    this.#topics = new Topics(this, o, (e) => this.#events.emit('dropped', e));
  }

  readonly #host: ConnectionHost;
  /** The TLS material new connections use (replaced by {@link reloadTls}). */
  #tls: BusTlsOptions | undefined;
  /** Handshakes the TLS connections the listener accepts (it never listens itself). */
  #tlsServer: TlsServer | undefined;
  /** A TLS node's accepted sockets, handshaking or not (close() destroys those still open). */
  readonly #tlsSockets = new Set<Socket>();

  /**
   * A TLS node's accepted socket: a TLS ClientHello goes to the TLS server (which checks a mutual
   * peer's certificate) and reaches the bus once handshaken; a plain dialer gets a plain
   * `MUSTER_TLS_HANDSHAKE` error frame it can read, and is closed.
   */
  #acceptTls(socket: Socket): void {
    const timer = this.#o.clock.setTimeout(() => socket.destroy(), this.#o.connectTimeoutMs);
    this.#tlsSockets.add(socket);
    socket.on('error', () => undefined);
    socket.once('close', () => {
      this.#o.clock.clearTimeout(timer);
      this.#tlsSockets.delete(socket);
    });
    socket.once('data', (chunk: Buffer) => {
      socket.pause();
      // From here the TLS server's handshakeTimeout, then the bus's hello timeout, take over.
      this.#o.clock.clearTimeout(timer);
      if (chunk[0] !== TLS_HANDSHAKE_RECORD) {
        const err = new MusterError(
          'MUSTER_TLS_HANDSHAKE',
          `bus peer ${this.address} uses TLS; the dialing node has no tls options`,
          { details: { peer: this.address, sent: false } },
        );
        this.#refused(`${socket.remoteAddress}:${socket.remotePort}`, err);
        socket.end(encodeFrame(Kind.Error, 0, bodyOfError(err, 'bus')));
        return;
      }
      socket.unshift(chunk);
      (this.#tlsServer as TlsServer).emit('connection', socket);
    });
  }

  /**
   * Replaces this node's TLS material (certificate, key, CA) for every connection made from now on,
   * dialed or accepted; open connections keep the session they have. For a daemon's reload (SIGHUP,
   * `POST /v1/reload`): `reload: async () => bus.reloadTls(await readBusTlsFiles(files))`.
   *
   * Throws `MUSTER_INVALID_ARGUMENT`, with nothing changed, when the node runs without TLS (TLS is
   * bus-wide: turning it on or off needs a restart), when `mutual` differs from the running
   * setting, or when the material is unusable (no key for the certificate, bad PEM). Returns what
   * certificate is now in use.
   */
  reloadTls(tls: BusTlsOptions): { subject: string; validTo: string; fingerprint256: string } {
    if (this.#tls === undefined || this.#tlsServer === undefined)
      throw invalidArgument(
        'this bus node runs without TLS; turning TLS on needs a restart (bus-wide setting)',
      );
    const checked = checkTls(tls) as BusTlsOptions;
    if ((checked.mutual === true) !== (this.#tls.mutual === true))
      throw invalidArgument(
        `reloaded TLS material must keep mutual: ${String(this.#tls.mutual === true)} (changing it needs a restart)`,
      );
    this.#tlsServer.setSecureContext(secureContextOptions(checked));
    this.#tls = checked;
    const cert = new X509Certificate(checked.cert);
    const summary = { subject: cert.subject, validTo: cert.validTo, fingerprint256: cert.fingerprint256 };
    this.#o.logger.info(
      { peer: this.address, ...summary },
      'bus TLS material reloaded; new connections use it',
    );
    return summary;
  }

  #refused(remote: string, err: MusterError): void {
    this.#o.logger.warn({ code: err.code, remote }, `bus connection refused: ${err.message}`);
  }

  /** The `host:port` the listener is bound to (differs from {@link address} with `advertise`). */
  get boundAddress(): string {
    const a = this.#server.address() as AddressInfo;
    return `${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`;
  }

  get clock(): Clock {
    return this.#o.clock;
  }

  get logger(): ResolvedBusOptions['logger'] {
    return this.#o.logger;
  }

  on<K extends keyof BusEvents>(event: K, listener: (...args: BusEvents[K]) => void): () => void {
    return this.#events.on(event, listener);
  }
  once<K extends keyof BusEvents>(event: K, listener: (...args: BusEvents[K]) => void): () => void {
    return this.#events.once(event, listener);
  }
  off<K extends keyof BusEvents>(event: K, listener: (...args: BusEvents[K]) => void): void {
    this.#events.off(event, listener);
  }

  /**
   * Serves `service` with `handlers` (method name → handler) and registers this node as an instance
   * of it, with its address. Handlers get `(message, { signal, caller, partition?, token? })`; a
   * handler's thrown error reaches the caller as `MUSTER_REMOTE` with its code. Every service also
   * answers `$info` (methods, request and error counts, latency).
   *
   * Throws `MUSTER_INVALID_ARGUMENT` (bad name, handler not a function, already served),
   * `MUSTER_DUPLICATE_INSTANCE`, and the store's errors.
   */
  async serve(
    service: string,
    handlers: Record<string, Handler>,
    options: ServeOptions = {},
  ): Promise<Serving> {
    this.#throwIfClosed();
    checkServiceName(service);
    for (const [name, h] of Object.entries(handlers)) {
      if (typeof h !== 'function')
        throw invalidArgument(`handler '${name}' of '${service}' is not a function`);
      if (name.startsWith('$'))
        throw invalidArgument(`method names starting with '$' are reserved, got '${name}'`);
    }
    if (this.#served.has(service)) throw invalidArgument(`this bus already serves '${service}'`);
    const served = new ServedService(
      service,
      handlers,
      positive(options.maxInFlight, DEFAULT_MAX_IN_FLIGHT, 'maxInFlight'),
      this.metrics,
    );
    this.#served.set(service, served);
    try {
      const tags = [BUS_TAG, ...(options.tags ?? [])];
      if (options.partitions !== undefined) {
        const p = options.partitions;
        const userAcquire = p.onAcquire;
        served.partitioned = await joinPartitioned(this.store, {
          ...p,
          service,
          id: this.id,
          address: this.address,
          ...(this.root === undefined ? {} : { root: this.root }),
          ...(options.weight === undefined ? {} : { weight: options.weight }),
          logger: p.logger ?? this.#o.logger,
          onAcquire: (partition, ctx) => {
            served.owned.set(partition, ctx);
            onAbort(ctx.signal, () => {
              if (served.owned.get(partition) === ctx) served.owned.delete(partition);
            });
            return userAcquire?.(partition, ctx);
          },
        });
      } else {
        served.member = await join(this.store, {
          service,
          id: this.id,
          address: this.address,
          session: this.session,
          tags,
          ...(this.root === undefined ? {} : { root: this.root }),
          ...(options.weight === undefined ? {} : { weight: options.weight }),
        });
      }
    } catch (err) {
      this.#served.delete(service);
      throw err;
    }
    return {
      service,
      partitions: served.partitioned,
      close: async () => {
        await served.close(DEFAULT_SERVE_GRACE_MS);
        if (this.#served.get(service) === served) this.#served.delete(service);
      },
    };
  }

  /**
   * Calls `method` of `service`. Without `key`, on a healthy instance (balanced, preferring this
   * host); with `key`, on the current owner of the key's partition, fenced by its token (see
   * docs/bus.md). Rejects with `MUSTER_NO_INSTANCE` at once when nobody serves it, `MUSTER_TIMEOUT`,
   * `MUSTER_ABORTED`, `MUSTER_REMOTE` (the handler threw; `details.remote.code`),
   * `MUSTER_UNKNOWN_METHOD`, `MUSTER_OVERLOADED`, `MUSTER_FRAME_TOO_LARGE`, `MUSTER_PEER_LOST` (the
   * connection broke with the call in flight; only `idempotent` calls are retried elsewhere).
   */
  call(service: string, method: string, args?: unknown, options: CallOptions = {}): Promise<unknown> {
    let timeoutMs: number;
    try {
      this.#throwIfClosed();
      throwIfAborted(options.signal);
      checkServiceName(service);
      if (typeof method !== 'string' || method.length === 0)
        throw invalidArgument('method must be a non-empty string');
      timeoutMs =
        options.timeout === undefined ? this.#o.callTimeoutMs : toMillis(options.timeout, 'timeout');
      if (options.key !== undefined && typeof options.key !== 'string')
        throw invalidArgument('key must be a string');
    } catch (err) {
      return Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
    const deadline = this.#o.clock.monotonic() + timeoutMs;
    if (options.key !== undefined)
      return this.#router.call(service, method, args, options.key, deadline, options);
    const view = this.#readyViews.get(service);
    if (view === undefined) return this.#callAny(service, method, args, options, deadline, timeoutMs);
    // The usual case, without an async function's frame or a set of tried addresses per call (0.3–
    // 0.4 KB of the ~5–7.5 KB a call allocated, measured): a listed view, one pick, one request. A
    // failure that may go to another instance takes the general path, #callAny.
    try {
      const target = this.#pick(service, view, undefined);
      if (target === undefined) return Promise.reject(noInstance(service, view.size));
      const left = deadline - this.#o.clock.monotonic();
      if (left <= 0) return Promise.reject(timeoutError(service, method, timeoutMs));
      const address = target.address as string;
      return this.request(address, { s: service, m: method, a: args }, left, options.signal).catch(
        (err: unknown) => {
          if (!safeToRetry(err, options.idempotent === true)) throw err;
          return this.#callAny(service, method, args, options, deadline, timeoutMs, address, err as Error);
        },
      );
    } catch (err) {
      return Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
  }

  /**
   * A call on any healthy instance: waits for the view to list, then tries instances until one
   * answers, one fails in a way that must not be retried, or none is left (`triedFirst`: the
   * address the fast path of {@link call} tried, and how it failed).
   */
  async #callAny(
    service: string,
    method: string,
    args: unknown,
    options: CallOptions,
    deadline: number,
    timeoutMs: number,
    triedFirst?: string,
    firstError?: Error,
  ): Promise<unknown> {
    const view = this.#readyViews.get(service) ?? (await this.instances(service, options.signal));
    const tried = new Set<string>(triedFirst === undefined ? [] : [triedFirst]);
    let lastError = firstError;
    for (;;) {
      const target = this.#pick(service, view, tried.size === 0 ? undefined : tried);
      if (target === undefined) {
        if (lastError !== undefined) throw lastError;
        throw noInstance(service, view.size);
      }
      tried.add(target.address as string);
      const left = deadline - this.#o.clock.monotonic();
      if (left <= 0) throw timeoutError(service, method, timeoutMs);
      try {
        return await this.request(
          target.address as string,
          { s: service, m: method, a: args },
          left,
          options.signal,
        );
      } catch (err) {
        lastError = err as Error;
        if (safeToRetry(err, options.idempotent === true)) continue;
        throw err;
      }
    }
  }

  /**
   * Sends one request to the node at `address` (connecting if needed) and records its latency.
   * Connection failures before sending are `MUSTER_UNAVAILABLE` with `details.sent: false`.
   */
  request(address: string, body: RequestBody, timeoutMs: number, signal?: AbortSignal): Promise<unknown> {
    const open = this.#peers.get(address);
    if (open !== undefined && open.state === 'open')
      return this.#requestOn(open, address, body, timeoutMs, signal);
    return this.connection(address, Math.min(timeoutMs, this.#o.connectTimeoutMs), signal).then((conn) =>
      this.#requestOn(conn, address, body, timeoutMs, signal),
    );
  }

  #requestOn(
    conn: Connection,
    address: string,
    body: RequestBody,
    timeoutMs: number,
    signal: AbortSignal | undefined,
  ): Promise<unknown> {
    const started = performance.now();
    const peer = conn.peer?.node ?? address;
    return conn.request(body, timeoutMs, signal).then(
      (r) => {
        this.metrics.call(body.s, body.m, peer, 'ok', (performance.now() - started) / 1000);
        return r;
      },
      (err: unknown) => {
        const code = isMusterError(err) ? err.code : 'error';
        this.metrics.call(body.s, body.m, peer, code, (performance.now() - started) / 1000);
        throw err;
      },
    );
  }

  /** The watched instance view of `service` (opened on first use, kept until close). */
  async instances(service: string, signal?: AbortSignal): Promise<InstanceView> {
    let view = this.#views.get(service);
    if (view === undefined) {
      view = watchInstances(this.store, service, this.root === undefined ? {} : { root: this.root });
      this.#views.set(service, view);
    }
    await abortable(view.ready, signal);
    if (this.#views.get(service) === view) this.#readyViews.set(service, view);
    return view;
  }

  /** @internal The view of `service` if it has listed already (no wait), else undefined. */
  readyView(service: string): InstanceView | undefined {
    return this.#readyViews.get(service);
  }

  /** True when calls should avoid `address` for now (its connection failed recently). */
  isDown(address: string): boolean {
    const until = this.#down.get(address);
    if (until === undefined) return false;
    if (until <= this.#o.clock.monotonic()) {
      this.#down.delete(address);
      return false;
    }
    return true;
  }

  /**
   * Healthy instances with an address, not yet tried by this call; those whose connection has not
   * just failed first; this host's first; then weighted round-robin.
   */
  #pick(service: string, view: InstanceView, tried: ReadonlySet<string> | undefined): Instance | undefined {
    // Healthy instances with an address and whether they are on this host, computed once per change
    // of the view (its `instances()` array is replaced on every change).
    const source = view.instances();
    let candidates = this.#candidates.get(service);
    if (candidates === undefined || candidates.source !== source) {
      const myHost = hostOf(this.address);
      const healthy = source.filter((i) => i.address !== null && isHealthy(i));
      candidates = {
        source,
        healthy,
        local: new Set(healthy.filter((i) => hostOf(i.address as string) === myHost)),
      };
      this.#candidates.set(service, candidates);
    }
    const only = candidates.healthy.length === 1 ? candidates.healthy[0] : undefined;
    if (only !== undefined && tried === undefined) return only; // the common case: nothing to choose
    const all =
      tried === undefined
        ? candidates.healthy
        : candidates.healthy.filter((i) => !tried.has(i.address as string));
    if (all.length === 0) return undefined;
    const up = all.filter((i) => !this.isDown(i.address as string));
    const pool0 = up.length > 0 ? up : all;
    const local = pool0.filter((i) => candidates.local.has(i));
    const pool = local.length > 0 ? local : pool0;
    if (pool.length === 1) return pool[0];
    // Membership's balancer (smooth weighted round-robin, passing before warning) over the pool.
    let balancer = this.#balancers.get(service);
    if (balancer === undefined) {
      balancer = new Balancer(view, { filter: (i) => this.#pool.has(i.id), clock: this.#o.clock });
      this.#balancers.set(service, balancer);
    }
    this.#pool = new Set(pool.map((i) => i.id));
    try {
      return balancer.pick();
    } finally {
      this.#pool = EMPTY_POOL;
    }
  }

  /** An open connection to `address`, connecting (and exchanging hellos) if needed. */
  async connection(address: string, timeoutMs: number, signal?: AbortSignal): Promise<Connection> {
    const open = this.#peers.get(address);
    if (open !== undefined && open.state === 'open') return open;
    let pending = this.#connecting.get(address);
    if (pending === undefined) {
      pending = this.#connect(address, timeoutMs);
      this.#connecting.set(address, pending);
      const clear = (): void => {
        if (this.#connecting.get(address) === pending) this.#connecting.delete(address);
      };
      pending.then(clear, clear);
    }
    return abortable(pending, signal);
  }

  /** Open connections to (or from) peers, by peer address. */
  peers(): ReadonlyMap<string, Connection> {
    return this.#peers;
  }

  async #connect(address: string, timeoutMs: number): Promise<Connection> {
    this.#throwIfClosed();
    const i = address.lastIndexOf(':');
    const host = address.slice(0, i).replace(/^\[(.*)\]$/, '$1');
    const port = Number(address.slice(i + 1));
    const socket =
      this.#tls === undefined
        ? netConnect({ host, port })
        : await this.#dialTls(address, host, port, timeoutMs);
    const conn = new Connection(this.#host, socket, address);
    this.#all.add(conn);
    const timer = this.#o.clock.setTimeout(() => {
      conn.close(
        new MusterError('MUSTER_UNAVAILABLE', `connecting to bus peer ${address} took over ${timeoutMs} ms`, {
          details: { peer: address, sent: false },
        }),
      );
    }, timeoutMs);
    try {
      await conn.ready;
    } catch (err) {
      this.#markDown(address);
      if (
        isMusterError(err, 'MUSTER_PERMISSION_DENIED') ||
        isMusterError(err, 'MUSTER_PROTOCOL') ||
        isMusterError(err, 'MUSTER_TLS_HANDSHAKE')
      )
        throw err;
      const cause = err as Error;
      throw new MusterError('MUSTER_UNAVAILABLE', `cannot connect to bus peer ${address}: ${cause.message}`, {
        cause,
        details: { peer: address, sent: false },
      });
    } finally {
      this.#o.clock.clearTimeout(timer);
    }
    this.metrics.connection('out', 'open', this.#everConnected.has(address) ? address : undefined);
    this.#everConnected.add(address);
    return conn;
  }

  /**
   * Dials `address` with TLS and resolves once the handshake is done (the peer's certificate checked
   * against `ca` and the dialed host). A failure after the TCP connect is `MUSTER_TLS_HANDSHAKE`.
   */
  #dialTls(address: string, host: string, port: number, timeoutMs: number): Promise<Socket> {
    const tls = this.#tls as BusTlsOptions;
    return new Promise<Socket>((resolve, reject) => {
      let tcp = false;
      const socket = tlsConnect({
        host,
        port,
        ...secureContextOptions(tls),
        ...(isIP(host) ? {} : { servername: host }),
      });
      const timer = this.#o.clock.setTimeout(() => {
        fail(new Error(`connecting took over ${timeoutMs} ms`));
      }, timeoutMs);
      const fail = (err: Error): void => {
        this.#o.clock.clearTimeout(timer);
        socket.destroy();
        this.#markDown(address);
        reject(
          tcp
            ? tlsError(address, err)
            : new MusterError('MUSTER_UNAVAILABLE', `cannot connect to bus peer ${address}: ${err.message}`, {
                cause: err,
                details: { peer: address, sent: false },
              }),
        );
      };
      const closed = (): void => fail(new Error('the peer closed the connection during the TLS handshake'));
      socket.once('connect', () => (tcp = true));
      socket.once('error', fail);
      socket.once('close', closed);
      socket.once('secureConnect', () => {
        this.#o.clock.clearTimeout(timer);
        socket.off('error', fail);
        socket.off('close', closed);
        resolve(socket);
      });
    });
  }

  #markDown(address: string): void {
    this.#down.set(address, this.#o.clock.monotonic() + DEFAULT_DOWN_BACKOFF_MS);
  }

  #opened(conn: Connection): void {
    const address = conn.address as string;
    const existing = this.#peers.get(address);
    // Two nodes that connect to each other at once keep both connections; new calls use the first.
    if (existing === undefined || existing.state === 'closed') this.#peers.set(address, conn);
    this.#down.delete(address);
  }

  #closed(conn: Connection, err: MusterError): void {
    this.#all.delete(conn);
    const address = conn.peer === undefined ? undefined : conn.address;
    this.metrics.connection(conn.outbound ? 'out' : 'in', 'close');
    if (address === undefined) {
      if (isRefusal(err)) {
        this.#o.logger.warn(
          { code: err.code, remote: `${conn.socket.remoteAddress}:${conn.socket.remotePort}` },
          `bus connection refused: ${err.message}`,
        );
      }
      return;
    }
    if (this.#peers.get(address) === conn) {
      this.#peers.delete(address);
      // Another open connection to the same peer (simultaneous connect) takes over.
      for (const c of this.#all) if (c.state === 'open' && c.address === address) this.#peers.set(address, c);
    }
    if (this.#closing === undefined) {
      if (!isMusterError(err, 'MUSTER_CLOSED')) this.#markDown(address);
      if (isRefusal(err))
        this.#o.logger.warn({ code: err.code, peer: address }, `bus connection closed: ${err.message}`);
      this.#events.emit('disconnected', address, err);
    }
  }

  #dispatch(conn: Connection, id: number, body: RequestBody, call: CallSignal): void {
    const served = this.#served.get(body.s);
    if (served === undefined) {
      conn.fail(
        id,
        new MusterError('MUSTER_NO_INSTANCE', `this node does not serve '${body.s}'`, {
          details: { service: body.s, ran: false },
        }),
        'bus',
      );
      return;
    }
    served.dispatch(conn, id, body, call);
  }

  /**
   * Publishes `message` on `topic` to every subscriber node (one per queue group), over direct
   * connections. Resolves once it is queued to each; subscribers that cannot take it now are
   * counted in `dropped` (and reported by the `dropped` event), never silently. Throws
   * `MUSTER_INVALID_ARGUMENT`, `MUSTER_FRAME_TOO_LARGE`.
   */
  publish(topic: string, message: unknown, options: BusPublishOptions = {}): Promise<PublishResult> {
    this.#throwIfClosed();
    return this.#topics.publish(topic, message, options);
  }

  /**
   * Subscribes `handler` to `topic`; the node advertises the topic in membership, so publishers
   * find it. Each message id is delivered once per subscription within the de-duplication window.
   * Resolves to an unsubscribe function.
   */
  subscribe(
    topic: string,
    handler: SubscriptionHandler,
    options: SubscribeOptions = {},
  ): Promise<() => Promise<void>> {
    this.#throwIfClosed();
    return this.#topics.subscribe(topic, handler, options);
  }

  /** Joins `service` under this bus's session (used for topic records). */
  joinService(service: string, tags: readonly string[]): ReturnType<typeof join> {
    return join(this.store, {
      service,
      id: this.id,
      address: this.address,
      session: this.session,
      tags: [BUS_TAG, ...tags],
      ...(this.root === undefined ? {} : { root: this.root }),
    });
  }

  #queues(): Iterable<[string, number, number]> {
    return [...this.#peers].map(([address, c]) => [c.peer?.node ?? address, c.queuedBytes, c.inFlight]);
  }

  #throwIfClosed(): void {
    if (this.#closing !== undefined) throw new MusterError('MUSTER_CLOSED', 'the bus was closed');
  }

  /**
   * Closes the node: stops serving (leaves every service, lets running handlers finish within
   * {@link DEFAULT_SERVE_GRACE_MS}), unsubscribes, closes every connection (calls in flight fail
   * with `MUSTER_PEER_LOST`), stops listening and closes the session. Idempotent; never rejects.
   */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      await Promise.allSettled([...this.#served.values()].map((s) => s.close(DEFAULT_SERVE_GRACE_MS)));
      this.#served.clear();
      await this.#topics.close().catch(() => undefined);
      this.#router.close();
      for (const v of this.#views.values()) v.close();
      this.#views.clear();
      this.#readyViews.clear();
      const closed = new MusterError('MUSTER_CLOSED', 'the bus was closed');
      for (const c of [...this.#all]) c.close(closed);
      for (const s of this.#tlsSockets) s.destroy();
      await new Promise<void>((ok) => this.#server.close(() => ok()));
      await this.session.close().catch(() => undefined);
      this.metrics.close();
    })();
    return this.#closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

export function hostOf(address: string): string {
  const i = address.lastIndexOf(':');
  return i < 0 ? address : address.slice(0, i);
}

/**
 * Whether a failed call may go to another instance: always when nothing ran (not connected, not
 * served there, refused by a full queue); after a lost connection only for idempotent calls.
 */
export function safeToRetry(err: unknown, idempotent: boolean): boolean {
  if (!isMusterError(err)) return false;
  if (err.code === 'MUSTER_FRAME_TOO_LARGE' || err.code === 'MUSTER_INVALID_ARGUMENT') return false; // same everywhere
  if (err.details.sent === false || err.details.ran === false) return true;
  return idempotent && err.code === 'MUSTER_PEER_LOST';
}

export { noInstance, timeoutError };
