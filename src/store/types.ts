/**
 * The Store port: the one interface every engine implements and everything above `src/store/` uses.
 * Semantics are etcd v3's (see docs/store.md); nothing above the port may assume more.
 */

/**
 * A lease id. etcd lease ids are 64-bit integers, beyond JavaScript's safe integers, so they travel as
 * decimal strings. {@link NO_LEASE} (`'0'`) means "no lease".
 */
export type LeaseId = string;
/** The lease id of a key that has no lease. */
export const NO_LEASE: LeaseId = '0';

/** A value as accepted by writes: bytes, or a string stored as UTF-8. */
export type ValueInput = Uint8Array | string;

/** One key and its metadata, as read at some revision. */
export interface KeyValue {
  readonly key: string;
  readonly value: Uint8Array;
  /** Revision of the write that created this incarnation of the key. */
  readonly createRevision: number;
  /** Revision of the last write to the key. */
  readonly modRevision: number;
  /** 1 on create, +1 per put; reset when the key is deleted and created again. */
  readonly version: number;
  /** The key's lease, or {@link NO_LEASE}. */
  readonly lease: LeaseId;
}

/** A key range: `{ prefix }`, one `{ key }`, or the half-open interval `[start, end)`. */
export type KeySelector =
  { readonly prefix: string } | { readonly key: string } | { readonly start: string; readonly end: string };

export interface ReadOptions {
  /** Read at this past revision (MVCC). Default: the head. Fails with `MUSTER_COMPACTED` if compacted. */
  revision?: number;
  signal?: AbortSignal;
}

export interface RangeOptions extends ReadOptions {
  /** At most this many keys (in key order). 0 or absent: no limit. */
  limit?: number;
  /** Omit values (each `value` is empty). */
  keysOnly?: boolean;
  /** Only count: `kvs` is empty, `count` is set. */
  countOnly?: boolean;
}

export interface RangeResult {
  readonly kvs: readonly KeyValue[];
  /** The store revision the range was read at. */
  readonly revision: number;
  /** Number of keys in the range (ignoring `limit`). */
  readonly count: number;
  /** True when `limit` cut the result short. */
  readonly more: boolean;
}

export interface PutOptions {
  /** Attach the key to this lease; the key is deleted when the lease ends. Unknown lease: `MUSTER_LEASE_NOT_FOUND`. */
  lease?: LeaseId;
  /** Return the previous key-value in `prev`. */
  prevKv?: boolean;
  signal?: AbortSignal;
}

export interface PutResult {
  readonly revision: number;
  readonly prev?: KeyValue | undefined;
}

export interface DeleteOptions {
  /** Return the deleted key-values in `prev`. */
  prevKv?: boolean;
  signal?: AbortSignal;
}

export interface DeleteResult {
  readonly revision: number;
  readonly deleted: number;
  readonly prev: readonly KeyValue[];
}

/** What a compare looks at. */
export type CompareTarget = 'value' | 'version' | 'createRevision' | 'modRevision' | 'lease';
export type CompareOp = '=' | '!=' | '<' | '>';

/**
 * One condition of a transaction. A missing key has version 0, createRevision 0, modRevision 0,
 * lease '0' and no value (any value compare on a missing key is false, as in etcd).
 */
export type Compare =
  | { readonly key: string; readonly target: 'value'; readonly op: CompareOp; readonly value: ValueInput }
  | {
      readonly key: string;
      readonly target: 'version' | 'createRevision' | 'modRevision';
      readonly op: CompareOp;
      readonly value: number;
    }
  | { readonly key: string; readonly target: 'lease'; readonly op: CompareOp; readonly value: LeaseId };

/** One operation inside a transaction. */
export type TxnOp =
  | { readonly type: 'put'; readonly key: string; readonly value: ValueInput; readonly lease?: LeaseId }
  | { readonly type: 'delete'; readonly selector: KeySelector }
  | {
      readonly type: 'range';
      readonly selector: KeySelector;
      readonly limit?: number;
      readonly keysOnly?: boolean;
    };

export type TxnOpResult =
  | { readonly type: 'put'; readonly revision: number }
  | { readonly type: 'delete'; readonly deleted: number }
  | {
      readonly type: 'range';
      readonly kvs: readonly KeyValue[];
      readonly count: number;
      readonly more: boolean;
    };

export interface TxnResult {
  readonly succeeded: boolean;
  /** Store revision after the transaction (unchanged if it wrote nothing). */
  readonly revision: number;
  /** One result per operation of the branch that ran. */
  readonly results: readonly TxnOpResult[];
}

export interface WatchEvent {
  readonly type: 'put' | 'delete';
  /** For a delete: the key with an empty value, `modRevision` = the deletion's revision, version 0. */
  readonly kv: KeyValue;
  /** The key-value before this event, when the watch asked for `prevKv` and the engine has it. */
  readonly prev?: KeyValue | undefined;
}

/**
 * What a watch yields, in revision order, with no gaps and no duplicates:
 * - `events`: one or more events; `revision` is the revision of the last event in the batch.
 * - `progress`: no new events; the watcher has now seen every event up to and including `revision`.
 */
export type WatchBatch =
  | { readonly type: 'events'; readonly revision: number; readonly events: readonly WatchEvent[] }
  | { readonly type: 'progress'; readonly revision: number };

export interface WatchOptions {
  /** First revision to deliver. Default: head + 1 (only new changes). Compacted: `MUSTER_COMPACTED`. */
  fromRevision?: number;
  /** Include the previous key-value of each event. */
  prevKv?: boolean;
  /** Ends the watch; the iterator then finishes without error. */
  signal?: AbortSignal;
}

/**
 * A live watch: an async iterable of {@link WatchBatch}es. Iteration ends when the watch is closed or
 * its signal aborts; it throws a MusterError (e.g. `MUSTER_COMPACTED`, `MUSTER_CLOSED`) if it fails.
 */
export interface Watch extends AsyncIterable<WatchBatch> {
  /** Asks the store for a progress notification (a `progress` batch covering the store's head). */
  requestProgress(): void;
  /** Stops the watch; idempotent. */
  close(): void;
}

export interface LeaseGrant {
  readonly id: LeaseId;
  readonly ttlSeconds: number;
}

export interface LeaseInfo {
  readonly id: LeaseId;
  /** Seconds left before expiry (rounded as etcd does). */
  readonly ttlSeconds: number;
  readonly grantedTtlSeconds: number;
  readonly keys: readonly string[];
}

/** The largest lease TTL the port accepts (as etcd's MaxLeaseTTL: 9,000,000,000 s is absurd; we cap at 1 year). */
export const MAX_LEASE_TTL_SECONDS = 365 * 24 * 3600;

/**
 * The store port. Keys are non-empty strings; values are bytes. Every write commits atomically at one
 * new revision; the revision increases by one per committed write transaction.
 */
export interface Store {
  /** The store URL with credentials removed, for logs. */
  readonly url: string;

  /** One key at the head (or at `revision`); `undefined` when absent. */
  get(key: string, options?: ReadOptions): Promise<KeyValue | undefined>;
  /** Keys under a prefix (a string), or a {@link KeySelector}, in key order. */
  range(selector: string | KeySelector, options?: RangeOptions): Promise<RangeResult>;
  put(key: string, value: ValueInput, options?: PutOptions): Promise<PutResult>;
  /** Deletes one key (a string) or a {@link KeySelector}. Deleting nothing does not create a revision. */
  delete(selector: string | KeySelector, options?: DeleteOptions): Promise<DeleteResult>;
  /** If every compare holds, runs `onSuccess`, else `onFailure`; atomically, at one revision. */
  txn(
    compares: readonly Compare[],
    onSuccess: readonly TxnOp[],
    onFailure?: readonly TxnOp[],
    options?: { signal?: AbortSignal },
  ): Promise<TxnResult>;
  /** Watches a prefix (a string) or a {@link KeySelector}. */
  watch(selector: string | KeySelector, options?: WatchOptions): Watch;
  /** Discards history before `revision`; reads and watches before it fail with `MUSTER_COMPACTED`. */
  compact(revision: number): Promise<void>;
  /** The store's head revision, read linearizably. */
  headRevision(options?: { signal?: AbortSignal }): Promise<number>;

  grantLease(ttlSeconds: number, options?: { signal?: AbortSignal }): Promise<LeaseGrant>;
  /** Renews the lease; resolves to the TTL it was renewed for. Unknown: `MUSTER_LEASE_NOT_FOUND`. */
  keepAlive(id: LeaseId, options?: { signal?: AbortSignal }): Promise<number>;
  /** Ends the lease and deletes its keys at one revision. Unknown: `MUSTER_LEASE_NOT_FOUND`. */
  revokeLease(id: LeaseId, options?: { signal?: AbortSignal }): Promise<void>;
  /** Remaining TTL and attached keys; `undefined` when the lease does not exist. */
  leaseTimeToLive(id: LeaseId, options?: { signal?: AbortSignal }): Promise<LeaseInfo | undefined>;

  /** Releases connections and ends every watch; idempotent. */
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}
