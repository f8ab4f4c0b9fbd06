/**
 * For sibling capabilities (the embedded server, config's relay client, the test harness), not for
 * users: what they need from the store and its engines beyond the public surface.
 */
export * from './index.js';
export { WatchQueue } from './watch-queue.js';
export { toRange, type KeyLimits } from './keys.js';
export type { TxnTreeResult } from './memory/memory-store.js';
export type { TreeOp, TreeResult, TxnTree } from './memory/txn-tree.js';
export type { MemoryWatch } from './memory/watch-hub.js';

/**
 * One-off SQL on a PostgreSQL server (the test harness, operators' tools): see
 * `postgres/admin.ts`. Loads `pg` on its first call only — config's relay client imports this
 * module, so a static import would load `pg` (and, through its runtime probe of `Response`, Node's
 * bundled undici with its WebAssembly parser) into every agent: about 8 MB of RSS
 * (docs/agent.md, "Memory").
 */
export async function adminQuery<R extends Record<string, unknown> = Record<string, unknown>>(
  url: string,
  text: string,
  params: unknown[] = [],
): Promise<R[]> {
  const admin = await import('./postgres/admin.js');
  return admin.adminQuery<R>(url, text, params);
}
