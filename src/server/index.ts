/**
 * `muster serve` as a library: the embedded, durable, single-node store that speaks etcd's v3 gRPC
 * API. Reach it with `openStore(server.url)` (the etcd engine), the `etcd3` package or `etcdctl`.
 */
export {
  startServer,
  parseListen,
  isLoopback,
  DEFAULT_LISTEN,
  DEFAULT_DATA_DIR,
  DEFAULT_MAX_REQUEST_BYTES,
  DEFAULT_PROGRESS_NOTIFY_INTERVAL,
  type ServerOptions,
  type MusterServer,
} from './server.js';
export {
  DurableStore,
  DEFAULT_SNAPSHOT_RECORDS,
  DEFAULT_SNAPSHOT_BYTES,
  type DurableStoreOptions,
  type RecoveryReport,
} from './durable-store.js';
export { REPORTED_ETCD_VERSION } from './grpc/maintenance.js';
