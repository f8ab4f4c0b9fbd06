/**
 * For sibling capabilities (the embedded server, config's relay client, the test harness), not for
 * users: what they need from the store and its engines beyond the public surface.
 */
export * from './index.js';
export { WatchQueue } from './watch-queue.js';
export { adminQuery } from './postgres/admin.js';
export { toRange, type KeyLimits } from './keys.js';
export type { TxnTreeResult } from './memory/memory-store.js';
export type { TreeOp, TreeResult, TxnTree } from './memory/txn-tree.js';
export type { MemoryWatch } from './memory/watch-hub.js';
