/**
 * `muster serve`'s Prometheus metrics, named as etcd names them where they mean the same thing, so
 * that etcd dashboards and alerts read them unchanged. The hot paths pay plain-number increments:
 * request tallies live in pre-created objects per method and become counters only when scraped, and
 * the log reports each sync to one histogram observation (no labels).
 */
import { Counter, exponentialBuckets, Gauge, type Registry } from 'prom-client';
import { FastHistogram } from '../daemon/internal.js';
import type { MemoryStore } from '../store/index.js';
import type { ServiceImplementation, UnaryCall, UnaryCallback, UnaryHandler } from './grpc/call.js';
import type { ServiceDefinition } from './grpc/services.js';

/** What the write-ahead log reports after each synchronous write (see wal.ts). */
export interface WalSync {
  /** Time the write and its sync took (with O_DSYNC, the write is the sync). */
  readonly seconds: number;
  /** Records written by this sync (the group-commit batch). */
  readonly records: number;
  readonly bytes: number;
}

/** What the gauges read when scraped. */
export interface ServeMetricSources {
  readonly store: MemoryStore;
  /** Open Watch and LeaseKeepAlive streams. */
  readonly streams: ReadonlySet<unknown>;
  /** Bytes of the data directory (log segments and snapshot). */
  dbSize(): number;
}

export interface ServeMetrics {
  /** Wraps a service's unary handlers to count calls by method and status code. */
  instrument(
    service: string,
    definition: ServiceDefinition,
    impl: ServiceImplementation,
  ): ServiceImplementation;
  /** For `DurableStore`'s `onWalSync`. */
  readonly onWalSync: (sync: WalSync) => void;
  /** Where the gauges read from, once the store is open. */
  attach(sources: ServeMetricSources): void;
}

/** gRPC status names as Go's `codes.Code.String()` writes them (go-grpc-prometheus, etcd). */
const GRPC_CODES = [
  'OK',
  'Canceled',
  'Unknown',
  'InvalidArgument',
  'DeadlineExceeded',
  'NotFound',
  'AlreadyExists',
  'PermissionDenied',
  'ResourceExhausted',
  'FailedPrecondition',
  'Aborted',
  'OutOfRange',
  'Unimplemented',
  'Internal',
  'Unavailable',
  'DataLoss',
  'Unauthenticated',
] as const;

type GrpcType = 'unary' | 'client_stream' | 'server_stream' | 'bidi_stream';

interface MethodTally {
  readonly labels: { grpc_type: GrpcType; grpc_service: string; grpc_method: string };
  started: number;
  ok: number;
  readonly failed: Map<string, number>;
}

/** etcd's WAL fsync buckets: 1 ms doubling to about 8 s. */
const FSYNC_BUCKETS = exponentialBuckets(0.001, 2, 14);
/** Group-commit batch sizes: 1 record doubling to 4096. */
const BATCH_BUCKETS = exponentialBuckets(1, 2, 13);

const NO_LABELS: readonly string[] = [];

/** Registers serve's metrics in `registry`. */
export function createServeMetrics(registry: Registry): ServeMetrics {
  const tallies: MethodTally[] = [];
  let sources: ServeMetricSources | undefined;
  const registers = [registry];

  new Counter({
    name: 'grpc_server_started_total',
    help: 'Total number of RPCs started on the server.',
    labelNames: ['grpc_type', 'grpc_service', 'grpc_method'],
    registers,
    collect() {
      this.reset();
      for (const t of tallies) this.inc(t.labels, t.started);
    },
  });
  new Counter({
    name: 'grpc_server_handled_total',
    help: 'Total number of RPCs completed on the server, regardless of success or failure (unary calls).',
    labelNames: ['grpc_type', 'grpc_service', 'grpc_method', 'grpc_code'],
    registers,
    collect() {
      this.reset();
      for (const t of tallies) {
        if (t.labels.grpc_type !== 'unary') continue;
        this.inc({ ...t.labels, grpc_code: 'OK' }, t.ok);
        for (const [code, n] of t.failed) this.inc({ ...t.labels, grpc_code: code }, n);
      }
    },
  });
  // Observed on every sync (every put of a sequential writer): the daemon runtime's hot-path
  // histogram and a plain number, not prom-client's label hashing per observation.
  const fsync = new FastHistogram({
    name: 'etcd_disk_wal_fsync_duration_seconds',
    help: 'The latency distributions of fsync called by WAL (muster: one synchronous write of a group-commit batch).',
    labelNames: [],
    buckets: FSYNC_BUCKETS,
    registers,
  });
  const batch = new FastHistogram({
    name: 'muster_serve_wal_batch_records',
    help: 'Log records written by one WAL sync (group commit: writes that arrive during a sync share the next one).',
    labelNames: [],
    buckets: BATCH_BUCKETS,
    registers,
  });
  let writtenBytes = 0;
  new Counter({
    name: 'etcd_disk_wal_write_bytes_total',
    help: 'Total number of bytes written in WAL.',
    registers,
    collect() {
      this.reset();
      this.inc(writtenBytes);
    },
  });
  gauge(
    registry,
    'etcd_debugging_mvcc_watcher_total',
    'Total number of watchers.',
    () => sources?.store.watcherCount,
  );
  gauge(
    registry,
    'muster_serve_grpc_streams',
    'Open Watch and LeaseKeepAlive streams.',
    () => sources?.streams.size,
  );
  gauge(registry, 'muster_serve_leases', 'Leases currently granted.', () => sources?.store.leaseIds().length);
  gauge(
    registry,
    'etcd_mvcc_db_total_size_in_bytes',
    'Total size of the data directory in bytes (muster: log segments and snapshot).',
    () => sources?.dbSize(),
  );
  gauge(
    registry,
    'etcd_debugging_mvcc_current_revision',
    'The current revision of the store.',
    () => sources?.store.revision,
  );
  gauge(registry, 'etcd_debugging_mvcc_keys_total', 'Total number of keys.', async () => {
    if (sources === undefined) return undefined;
    return (await sources.store.range({ prefix: '' }, { countOnly: true })).count;
  });

  return {
    instrument(service, definition, impl) {
      const out: ServiceImplementation = {};
      for (const [method, handler] of Object.entries(impl)) {
        const def = definition[method];
        const type: GrpcType =
          def === undefined || (!def.requestStream && !def.responseStream)
            ? 'unary'
            : def.requestStream && def.responseStream
              ? 'bidi_stream'
              : def.requestStream
                ? 'client_stream'
                : 'server_stream';
        const tally: MethodTally = {
          labels: { grpc_type: type, grpc_service: service, grpc_method: method },
          started: 0,
          ok: 0,
          failed: new Map(),
        };
        tallies.push(tally);
        out[method] =
          type === 'unary' ? countUnary(tally, handler as UnaryHandler) : countStream(tally, handler);
      }
      return out;
    },
    onWalSync(sync) {
      fsync.observe(NO_LABELS, sync.seconds);
      batch.observe(NO_LABELS, sync.records);
      writtenBytes += sync.bytes;
    },
    attach(s) {
      sources = s;
    },
  };
}

function countUnary(tally: MethodTally, handler: UnaryHandler): UnaryHandler {
  return (call: UnaryCall, callback: UnaryCallback) => {
    tally.started++;
    handler(call, (err, value) => {
      if (err === null || err === undefined) tally.ok++;
      else {
        const code = GRPC_CODES[err.code ?? 2] ?? 'Unknown';
        tally.failed.set(code, (tally.failed.get(code) ?? 0) + 1);
      }
      callback(err, value);
    });
  };
}

function countStream<H>(tally: MethodTally, handler: H): H {
  const fn = handler as unknown as (call: unknown) => void;
  return ((call: unknown) => {
    tally.started++;
    fn(call);
  }) as unknown as H;
}

function gauge(
  registry: Registry,
  name: string,
  help: string,
  read: () => number | undefined | Promise<number | undefined>,
): void {
  new Gauge({
    name,
    help,
    registers: [registry],
    async collect() {
      const v = await read();
      if (v !== undefined) this.set(v);
    },
  });
}
