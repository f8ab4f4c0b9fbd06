/**
 * The store: every shared fact in muster, with etcd v3 semantics, behind one port.
 */
export * from './types.js';
export type { EtcdStoreOptions } from './etcd/url.js';
export type { PostgresStoreOptions } from './postgres/url.js';
export { openStore, registerEngine, redactUrl, DEFAULT_STORE_URL, type OpenStoreOptions } from './open.js';
export { MemoryStore, openMemoryStore, type MemoryStoreOptions } from './memory/memory-store.js';
export type { Journal, JournalEntry, JournalChange, EngineSnapshot } from './memory/journal.js';
export {
  textOf,
  bytesOf,
  jsonOf,
  jsonBytes,
  compareKeys,
  MAX_VALUE_BYTES,
  MAX_KEY_BYTES,
  MAX_TXN_OPS,
} from './keys.js';
export {
  watchPrefix,
  WatchedPrefix,
  DEFAULT_WATCH_BACKOFF,
  type BackoffOptions,
  type ResetChange,
  type SourceWatch,
  type WatchedBatch,
  type WatchedChange,
  type WatchedState,
  type WatchPrefixOptions,
  type WatchSource,
} from './watched.js';
