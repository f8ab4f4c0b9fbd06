/**
 * `startServer`: the embedded default store. A durable memory engine served over the etcd v3 gRPC
 * API, so that the etcd engine (`etcd://host:port`), the `etcd3` package and `etcdctl` are its
 * clients, and moving to a real etcd cluster is a change of URL.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Server, ServerCredentials, type UntypedServiceImplementation } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { Clock } from '../clock.js';
import { invalidArgument, MusterError } from '../errors.js';
import type { MemoryStore } from '../store/index.js';
import { type Duration, toMillis } from '../util/duration.js';
import { isLoopback, parseHostPort } from '../util/net.js';
import { DurableStore, type RecoveryReport } from './durable-store.js';
import { createServeMetrics } from './metrics.js';
import { authService, tokenGate } from './grpc/auth.js';
import type { ServiceContext } from './grpc/context.js';
import { kvService } from './grpc/kv.js';
import { leaseService } from './grpc/lease.js';
import { clusterService, maintenanceService } from './grpc/maintenance.js';
import { etcdServices } from './grpc/proto.js';
import { watchService } from './grpc/watch.js';

/** Loopback on etcd's client port: reachable by local clients only, where etcd would be. */
export const DEFAULT_LISTEN = '127.0.0.1:2379';
/** Data directory when none is given, relative to the working directory (etcd uses `default.etcd`). */
export const DEFAULT_DATA_DIR = 'muster-data';
/** etcd's `--max-request-bytes` default; larger requests are refused. */
export const DEFAULT_MAX_REQUEST_BYTES = 1.5 * 1024 * 1024;
/** etcd's default interval for `progress_notify` watchers (its `--experimental-watch-progress-notify-interval`). */
export const DEFAULT_PROGRESS_NOTIFY_INTERVAL = '10m';
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

function credentials(options: ServerOptions): ServerCredentials {
  if (options.cert === undefined && options.key === undefined) return ServerCredentials.createInsecure();
  if (options.cert === undefined || options.key === undefined) {
    throw invalidArgument('TLS needs both --cert and --key');
  }
  try {
    return ServerCredentials.createSsl(null, [
      { cert_chain: readFileSync(options.cert), private_key: readFileSync(options.key) },
    ]);
  } catch (err) {
    throw invalidArgument(`cannot load the TLS certificate or key: ${(err as Error).message}`);
  }
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
  const tls = options.cert !== undefined;
  const log = options.logger;
  const metrics = options.metrics === undefined ? undefined : createServeMetrics(options.metrics);
  const durable = await DurableStore.open({
    ...(metrics ? { onWalSync: metrics.onWalSync } : {}),
    dataDir: options.dataDir ?? DEFAULT_DATA_DIR,
    ...(log ? { logger: log } : {}),
    ...(options.snapshotRecords !== undefined ? { snapshotRecords: options.snapshotRecords } : {}),
    ...(options.clock ? { clock: options.clock } : {}),
  });
  const maxRequest = options.maxRequestBytes ?? DEFAULT_MAX_REQUEST_BYTES;
  const server = new Server({
    // etcd adds 512 KiB of gRPC overhead to its request limit.
    'grpc.max_receive_message_length': maxRequest + 512 * 1024,
    'grpc.max_send_message_length': -1,
    // Channelz (gRPC's introspection service, not served here) costs timestamps and counters on
    // every call.
    'grpc.enable_channelz': 0,
  });
  const streams = new Set<{ end(): void }>();
  let clientUrl = '';
  const ctx: ServiceContext = {
    store: durable.store,
    auth: tokenGate(token),
    memberId: durable.memberId,
    clusterId: durable.memberId,
    get clientUrl() {
      return clientUrl;
    },
    progressNotifyMs: toMillis(options.progressNotifyInterval ?? DEFAULT_PROGRESS_NOTIFY_INTERVAL),
    streams,
    log,
    dbSize: () => dirSize(durable.dataDir),
  };
  const services = etcdServices();
  const add = (name: keyof typeof services, impl: UntypedServiceImplementation): void => {
    const def = services[name];
    server.addService(def, metrics ? metrics.instrument(`etcdserverpb.${name}`, def, impl) : impl);
  };
  add('KV', kvService(ctx));
  add('Watch', watchService(ctx));
  add('Lease', leaseService(ctx));
  add('Maintenance', maintenanceService(ctx));
  add('Cluster', clusterService(ctx));
  add('Auth', authService(ctx));
  metrics?.attach({ store: durable.store, streams, dbSize: () => ctx.dbSize() });

  let bound: number;
  try {
    bound = await new Promise<number>((resolve, reject) => {
      const target = host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
      server.bindAsync(target, creds, (err, p) => (err ? reject(err) : resolve(p)));
    });
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
      for (const s of [...streams]) s.end();
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, SHUTDOWN_GRACE_MS);
        server.tryShutdown(() => {
          clearTimeout(timer);
          resolve();
        });
      });
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
