/**
 * The etcd engine: `etcd://` and `etcds://` stores, on muster's own etcd v3 client (gRPC on
 * `node:http2`, hand-written protobuf codecs; no npm dependency).
 */
export { EtcdStore, openEtcdStore, progressModeFor } from './etcd-store.js';
export { fromEtcdError } from './errors.js';
export { KEEPALIVE_HEDGE_MS } from './keep-alive.js';
export { type EtcdStoreOptions, DEFAULT_REQUEST_TIMEOUT, resolveEtcdOptions } from './url.js';
