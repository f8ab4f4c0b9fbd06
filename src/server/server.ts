/**
 * `startServer`: the embedded default store. A durable memory engine served over the etcd v3 gRPC
 * API, so that the etcd engine (`etcd://host:port`), the `etcd3` package and `etcdctl` are its
 * clients, and moving to a real etcd cluster is a change of URL.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { Clock } from '../clock.js';
import { invalidArgument, MusterError } from '../errors.js';
import type { MemoryStore } from '../store/index.js';
import { type Duration, toMillis } from '../util/duration.js';
import { isLoopback, parseHostPort } from '../util/net.js';
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createNetServer, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { NO_LEASE } from '../store/internal.js';
import { gatewayHandler } from './gateway.js';
import { header } from './grpc/context.js';
import { leaseOf as leaseOfWire } from './grpc/convert.js';
import { ETCD } from './grpc/errors.js';
import { ALARM_NOSPACE, Alarms } from './alarms.js';
import { AuthStore } from './auth-store.js';
import { DurableStore, type RecoveryReport } from './durable-store.js';
import { authGate, authService } from './grpc/auth.js';
import { createServeMetrics } from './metrics.js';
import type { ServiceContext } from './grpc/context.js';
import { kvService } from './grpc/kv.js';
import { leaseService } from './grpc/lease.js';
import { clusterService, maintenanceService } from './grpc/maintenance.js';
import { etcdServices } from './grpc/services.js';
import type { ServiceImplementation } from './grpc/call.js';
import { GrpcTransport, rpcMethods } from './grpc/transport.js';
import { watchService } from './grpc/watch.js';

/** Loopback on etcd's client port: reachable by local clients only, where etcd would be. */
export const DEFAULT_LISTEN = '127.0.0.1:2379';
/** Data directory when none is given, relative to the working directory (etcd uses `default.etcd`). */
export const DEFAULT_DATA_DIR = 'muster-data';
/** etcd's `--max-request-bytes` default; larger requests are refused. */
export const DEFAULT_MAX_REQUEST_BYTES = 1.5 * 1024 * 1024;
/** etcd's default interval for `progress_notify` watchers (its `--experimental-watch-progress-notify-interval`). */
export const DEFAULT_PROGRESS_NOTIFY_INTERVAL = '10m';
/** How often the data size is compared with `quotaBackendBytes`. */
export const QUOTA_CHECK_INTERVAL_MS = 1000;
/** How long `close()` lets in-flight calls finish before cutting connections. */
export const SHUTDOWN_GRACE_MS = 2000;

export interface ServerOptions {
  /** Where the log and snapshots live; created if missing. Default {@link DEFAULT_DATA_DIR}. */
  dataDir?: string;
  /** `host:port` to listen on; port 0 picks a free port. Default {@link DEFAULT_LISTEN}. */
  listen?: string;
  /** Clients must present this token. Required when `listen` is not a loopback address. */
  token?: string;
  /** A file whose first line is the token (instead of {@link token}). */
  tokenFile?: string;
  /** PEM certificate chain and key files: serve TLS (clients use `etcds://`). */
  cert?: string;
  key?: string;
  /** Lines about start-up, recovery, snapshots and shutdown. Default: none. */
  logger?: Logger;
  /** Interval of `progress_notify` responses. Default {@link DEFAULT_PROGRESS_NOTIFY_INTERVAL}. */
  progressNotifyInterval?: Duration;
  /** Request size limit. Default {@link DEFAULT_MAX_REQUEST_BYTES}. */
  maxRequestBytes?: number;
  /** Log records between snapshots (see durable-store.ts). */
  snapshotRecords?: number;
  /** Clock for lease expiry. Default: the system clock. */
  clock?: Clock;
  /**
   * etcd's `--quota-backend-bytes`: when the data directory grows past it, the `NOSPACE` alarm is
   * raised and writes that add data are refused until it is disarmed. Default: 0, no quota.
   */
  quotaBackendBytes?: number;
  /** A snapshot file (from the Snapshot RPC / `etcdctl snapshot save`) to restore into an empty data directory. */
  restore?: string;
  /**
   * Register serve's metrics here (requests by method and code, WAL sync latency and batch size,
   * watchers, leases, db size, keys: see docs/serve.md). Default: none, and no counting at all.
   */
  metrics?: Registry;
}

/** A running server. */
export interface MusterServer {
  /** The store URL for clients: `etcd://127.0.0.1:PORT` (or `etcds://` with TLS). */
  readonly url: string;
  readonly host: string;
  readonly port: number;
  readonly dataDir: string;
  /** The engine behind the server (in-process users may call it directly). */
  readonly store: MemoryStore;
  readonly recovery: RecoveryReport;
  /** Writes a snapshot now (normally automatic). */
  snapshot(): Promise<void>;
  /** Ends every stream, stops listening, flushes the log and writes a final snapshot; idempotent. */
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/** Parses `host:port`, `[v6]:port` or `:port` (loopback). */
export function parseListen(listen: string): { host: string; port: number } {
  return parseHostPort(listen, '--listen');
}

export { isLoopback };

function readToken(options: ServerOptions): string | undefined {
  if (options.token !== undefined && options.tokenFile !== undefined) {
    throw invalidArgument('give either a token or a token file, not both');
  }
  let token = options.token;
  if (options.tokenFile !== undefined) {
    try {
      token = readFileSync(options.tokenFile, 'utf8').split(/\r?\n/)[0]?.trim();
    } catch (err) {
      throw invalidArgument(`cannot read the token file ${options.tokenFile}: ${(err as Error).message}`);
    }
  }
  if (token !== undefined && token.length < 16) {
    throw invalidArgument('the token must be at least 16 characters long (e.g. `openssl rand -hex 32`)');
  }
  return token;
}

function credentials(options: ServerOptions): { cert: Buffer; key: Buffer } | undefined {
  if (options.cert === undefined && options.key === undefined) return undefined;
  if (options.cert === undefined || options.key === undefined) {
    throw invalidArgument('TLS needs both --cert and --key');
  }
  try {
    return { cert: readFileSync(options.cert), key: readFileSync(options.key) };
  } catch (err) {
    throw invalidArgument(`cannot load the TLS certificate or key: ${(err as Error).message}`);
  }
}

/**
 * The cluster id of a one-member cluster: derived from the member id (stable across restarts) but
 * different from it, as etcd's are (clients and tools show both).
 */
export function clusterIdOf(memberId: string): string {
  const id = BigInt.asUintN(64, BigInt(memberId) ^ 0x9e3779b97f4a7c15n);
  return String(id === 0n ? 1n : id);
}

/** The client port shared by gRPC and the HTTP/JSON gateway. */
interface FrontServer {
  readonly port: number;
  close(): void;
}

/** The HTTP/2 connection preface every gRPC client sends first. */
const H2_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n');

/**
 * Listens on `host:port` and hands each connection, by its first bytes, to gRPC (the HTTP/2
 * preface; the socket itself goes to the HTTP/2 server, so gRPC traffic is not proxied) or to the
 * gateway.
 */
function listenFront(
  host: string,
  port: number,
  injector: { injectConnection(socket: Duplex): void },
  gateway: (req: IncomingMessage, res: ServerResponse) => void,
): Promise<FrontServer> {
  const http1 = createHttpServer(gateway);
  const sockets = new Set<Socket>();
  // TCP_NODELAY, as Go (etcd) sets it on every connection: a small gRPC response is not held back.
  const tcp = createNetServer({ noDelay: true }, (socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    let head: Buffer = Buffer.alloc(0);
    const decide = (chunk: Buffer): void => {
      head = head.length === 0 ? chunk : Buffer.concat([head, chunk]);
      const n = Math.min(head.length, H2_PREFACE.length);
      const h2 = head.subarray(0, n).equals(H2_PREFACE.subarray(0, n));
      if (h2 && n < H2_PREFACE.length) return;
      socket.off('data', decide);
      socket.pause();
      socket.unshift(head);
      // The transport reads the socket itself (resuming it); the HTTP/1.1 parser reads the bytes
      // put back once the socket flows.
      if (h2) injector.injectConnection(socket);
      else {
        http1.emit('connection', socket);
        socket.resume();
      }
    };
    socket.on('data', decide);
    socket.on('error', () => undefined);
  });
  return new Promise((resolve, reject) => {
    tcp.once('error', reject);
    tcp.listen(port, host, () => {
      tcp.off('error', reject);
      const address = tcp.address();
      resolve({
        port: typeof address === 'object' && address !== null ? address.port : port,
        close: () => {
          tcp.close();
          http1.close();
          for (const s of sockets) if (!s.destroyed && s.listenerCount('data') === 0) s.destroy();
        },
      });
    });
  });
}

function dirSize(dir: string): number {
  let total = 0;
  for (const n of readdirSync(dir)) {
    try {
      total += statSync(join(dir, n)).size;
    } catch {
      // removed meanwhile
    }
  }
  return total;
}

/**
 * Opens the data directory (recovering its state) and starts serving.
 *
 * Throws `MUSTER_INVALID_ARGUMENT` (bad listen address, a non-loopback address without a token, bad
 * TLS files), `MUSTER_ADDRESS_IN_USE`, `MUSTER_DATA_DIR_LOCKED` and `MUSTER_CORRUPT_DATA`.
 */
export async function startServer(options: ServerOptions = {}): Promise<MusterServer> {
  const t0 = performance.now();
  const { host, port } = parseListen(options.listen ?? DEFAULT_LISTEN);
  const token = readToken(options);
  if (token === undefined && !isLoopback(host)) {
    throw invalidArgument(
      `listening on ${host} exposes the store to the network; give --token-file (and --cert/--key for TLS), or listen on 127.0.0.1`,
    );
  }
  const creds = credentials(options);
  const tls = creds !== undefined;
  const log = options.logger;
  const maxRequest = options.maxRequestBytes ?? DEFAULT_MAX_REQUEST_BYTES;
  const metrics = options.metrics === undefined ? undefined : createServeMetrics(options.metrics);
  const durable = await DurableStore.open({
    ...(metrics ? { onWalSync: metrics.onWalSync } : {}),
    dataDir: options.dataDir ?? DEFAULT_DATA_DIR,
    // Keys are bytes of any length, as in etcd; the request limit bounds keys and values (kv.ts).
    limits: { keyBytes: Infinity, valueBytes: Infinity },
    ...(log ? { logger: log } : {}),
    ...(options.snapshotRecords !== undefined ? { snapshotRecords: options.snapshotRecords } : {}),
    ...(options.clock ? { clock: options.clock } : {}),
    ...(options.restore !== undefined ? { restore: options.restore } : {}),
  });
  let alarms: Alarms;
  let authStore: AuthStore;
  try {
    alarms = await Alarms.load(durable.dataDir);
    authStore = await AuthStore.load(durable.dataDir);
  } catch (err) {
    await durable.close().catch(() => undefined);
    throw err;
  }
  const streams = new Set<{ end(): void }>();
  let clientUrl = '';
  const ctx: ServiceContext = {
    store: durable.store,
    auth: authGate(token, authStore),
    memberId: durable.memberId,
    clusterId: clusterIdOf(durable.memberId),
    get clientUrl() {
      return clientUrl;
    },
    maxRequestBytes: maxRequest,
    progressNotifyMs: toMillis(options.progressNotifyInterval ?? DEFAULT_PROGRESS_NOTIFY_INTERVAL),
    streams,
    log,
    dbSize: () => dirSize(durable.dataDir),
    alarms,
    exportSnapshot: () => durable.exportSnapshot(),
  };
  const quota = options.quotaBackendBytes ?? 0;
  const quotaTimer =
    quota > 0
      ? setInterval(() => {
          if (alarms.noSpace || dirSize(durable.dataDir) <= quota) return;
          log?.warn(
            { quotaBackendBytes: quota },
            'the data passed --quota-backend-bytes; NOSPACE alarm raised',
          );
          alarms.activate(durable.memberId, ALARM_NOSPACE).catch((err: unknown) => {
            log?.error({ err }, 'could not record the NOSPACE alarm');
          });
        }, QUOTA_CHECK_INTERVAL_MS)
      : undefined;
  quotaTimer?.unref();
  const services = etcdServices();
  const impls = {
    KV: kvService(ctx),
    Watch: watchService(ctx),
    Lease: leaseService(ctx),
    Maintenance: maintenanceService(ctx),
    Cluster: clusterService(ctx),
    Auth: authService(ctx, authStore),
  };
  const served: Record<string, ServiceImplementation> = {};
  for (const name of Object.keys(impls) as (keyof typeof impls)[]) {
    const def = services[name];
    const impl: ServiceImplementation = impls[name];
    served[name] = metrics ? metrics.instrument(`etcdserverpb.${name}`, def, impl) : impl;
  }
  metrics?.attach({ store: durable.store, streams, dbSize: () => ctx.dbSize() });
  let grpc: GrpcTransport;
  try {
    grpc = new GrpcTransport(rpcMethods({ ...services }, served), {
      // etcd adds 512 KiB of gRPC overhead to its request limit.
      maxReceiveMessageBytes: maxRequest + 512 * 1024,
      ...(creds ? { tls: creds } : {}),
    });
  } catch (err) {
    await durable.close().catch(() => undefined);
    throw invalidArgument(`cannot load the TLS certificate or key: ${(err as Error).message}`);
  }

  let bound: number;
  let front: FrontServer | undefined;
  try {
    if (tls) {
      // TLS: gRPC only (the gateway would need ALPN on the TLS handshake to share the port).
      bound = await grpc.listen(host, port);
    } else {
      front = await listenFront(
        host,
        port,
        grpc,
        gatewayHandler(
          services,
          impls,
          async (id, md) => {
            ctx.auth.check(md);
            const lease = leaseOfWire(id);
            if (lease === undefined || lease === NO_LEASE) throw ETCD.leaseNotFound();
            const ttl = await durable.store.keepAlive(lease);
            return { header: header(ctx, durable.store.revision), ID: lease, TTL: String(ttl) };
          },
          options.metrics,
        ),
      );
      bound = front.port;
    }
  } catch (err) {
    await durable.close().catch(() => undefined);
    const message = (err as Error).message;
    if (/EADDRINUSE|address already in use/i.test(message)) {
      throw new MusterError(
        'MUSTER_ADDRESS_IN_USE',
        `${host}:${port} is already in use (another muster serve or etcd?); stop it or pass another --listen`,
        { cause: err, details: { host, port } },
      );
    }
    throw new MusterError('MUSTER_INVALID_ARGUMENT', `cannot listen on ${host}:${port}: ${message}`, {
      cause: err,
      details: { host, port },
    });
  }
  const urlHost = host.includes(':') ? `[${host}]` : host;
  const url = `${tls ? 'etcds' : 'etcd'}://${urlHost}:${bound}`;
  clientUrl = `${tls ? 'https' : 'http'}://${urlHost}:${bound}`;
  log?.info(
    {
      url,
      dataDir: durable.dataDir,
      revision: durable.recovery.revision,
      snapshotRevision: durable.recovery.snapshotRevision,
      replayed: durable.recovery.records,
      auth: token !== undefined,
      tls,
      ms: Math.round(performance.now() - t0),
    },
    `muster serve listening on ${url}, data in ${durable.dataDir}`,
  );

  let closing: Promise<void> | undefined;
  const close = (): Promise<void> => {
    closing ??= (async () => {
      if (quotaTimer !== undefined) clearInterval(quotaTimer);
      front?.close();
      for (const s of [...streams]) s.end();
      await grpc.close(SHUTDOWN_GRACE_MS);
      await durable.close();
      log?.info({ dataDir: durable.dataDir }, 'muster serve stopped; log flushed and snapshot written');
    })();
    return closing;
  };
  return {
    url,
    host,
    port: bound,
    dataDir: durable.dataDir,
    store: durable.store,
    recovery: durable.recovery,
    snapshot: () => durable.snapshot(),
    close,
    [Symbol.asyncDispose]: close,
  };
}
