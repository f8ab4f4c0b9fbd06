/**
 * The etcd engine: `etcd://` and `etcds://` stores. Only `src/store/` imports this folder's
 * dependencies (`etcd3`, `@grpc/grpc-js`).
 */
export { EtcdStore, openEtcdStore, progressModeFor } from './etcd-store.js';
export { fromEtcdError } from './errors.js';
export { KEEPALIVE_HEDGE_MS } from './keep-alive.js';
export { type EtcdStoreOptions, DEFAULT_REQUEST_TIMEOUT, resolveEtcdOptions } from './url.js';
