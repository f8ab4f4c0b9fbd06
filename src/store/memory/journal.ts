/**
 * The memory engine's journal hook: how a durable engine (the embedded server) learns of every
 * committed change, in order, and how it replays them at start-up.
 *
 * The engine calls {@link Journal.append} synchronously for each change, in commit order, then
 * awaits {@link Journal.flush} before it acknowledges the write, answers reads that could observe
 * it, or shows it to watchers. One flush may cover many appends (group commit).
 */
import type { LeaseId } from '../types.js';

/** One key changed by a committed write: a put (with value and lease) or a delete. */
export type JournalChange =
  | { readonly key: string; readonly value: Uint8Array; readonly lease: LeaseId }
  | { readonly key: string; readonly deleted: true };

/** A change to the engine's durable state. */
export type JournalEntry =
  /** A write transaction (put, delete, txn, or the deletions of an expired/revoked lease) at `revision`. */
  | { readonly type: 'write'; readonly revision: number; readonly changes: readonly JournalChange[] }
  | { readonly type: 'lease-grant'; readonly id: LeaseId; readonly ttlSeconds: number }
  /** A lease ended; its keys' deletions are a separate `write` entry just before, when it had keys. */
  | { readonly type: 'lease-end'; readonly id: LeaseId }
  | { readonly type: 'compact'; readonly revision: number };

export interface Journal {
  /** Records an entry in order; must not throw for well-formed entries. */
  append(entry: JournalEntry): void;
  /** Resolves when every entry appended so far is durable. A rejection stops the engine. */
  flush(): Promise<void>;
}

/** The whole durable state of a memory engine, for snapshots. History before `revision` is not kept. */
export interface EngineSnapshot {
  readonly revision: number;
  readonly compactRevision: number;
  readonly nextLeaseId: string;
  readonly leases: readonly { readonly id: LeaseId; readonly ttlSeconds: number }[];
  readonly kvs: readonly {
    readonly key: string;
    readonly value: Uint8Array;
    readonly createRevision: number;
    readonly modRevision: number;
    readonly version: number;
    readonly lease: LeaseId;
  }[];
}
