/**
 * The memory engine: the Store port in one process, with MVCC history, leases expired from an
 * injected clock, and ordered watch delivery. The basis of unit tests and simulations, and — with a
 * {@link Journal} — of the durable embedded server.
 */
import { type Clock, systemClock } from '../../clock.js';
import { MusterError, throwIfAborted } from '../../errors.js';
import {
  checkKey,
  checkLeaseId,
  checkRevision,
  checkTtl,
  compareKeys,
  type KeyLimits,
  PORT_LIMITS,
  toBytes,
  toRange,
} from '../keys.js';
import {
  type Compare,
  type DeleteOptions,
  type DeleteResult,
  type KeySelector,
  type KeyValue,
  type LeaseGrant,
  type LeaseId,
  type LeaseInfo,
  NO_LEASE,
  type PutOptions,
  type PutResult,
  type RangeOptions,
  type RangeResult,
  type ReadOptions,
  type Store,
  type TxnOp,
  type TxnResult,
  type ValueInput,
  type Watch,
  type WatchOptions,
} from '../types.js';
import { evaluateCompare, validateCompares } from '../txn-rules.js';
import { CommitLog } from './commit-log.js';
import type { EngineSnapshot, Journal, JournalEntry } from './journal.js';
import { KeyIndex } from './key-index.js';
import { LeaseTable, leaseNotFound } from './leases.js';
import { compactTo, type EngineParts, replayEntry, restoreSnapshot, takeSnapshot } from './recovery.js';
import { applyOps, checkLimit, prepareOps } from './txn-ops.js';
import { applyPath, checkTree, choosePath, pathOps, type TreeResult, type TxnTree } from './txn-tree.js';
import { WatchHub } from './watch-hub.js';
import { WriteSet } from './write-set.js';

export interface MemoryStoreOptions {
  /** Time source for lease expiry. Default: the system clock. */
  clock?: Clock;
  /** Durability hook (the embedded server). Default: none — state lives only in this process. */
  journal?: Journal;
  /** Name used in {@link Store.url}. Default: `memory:`. */
  url?: string;
  /**
   * Key and value size limits. Default: the Store port's ({@link PORT_LIMITS}). The embedded server
   * raises them to etcd's request limit (its keys are bytes, see src/server/grpc/convert.ts).
   */
  limits?: KeyLimits;
  /**
   * The first lease id a new engine grants (later ids count up from it; a restored engine continues
   * from its snapshot and log). Default 1. The embedded server starts from a large, member-specific
   * number, as etcd's ids look.
   */
  firstLeaseId?: bigint;
}

/** The in-process engine. Create with {@link openMemoryStore} or `openStore('memory:')`. */
export class MemoryStore implements Store {
  readonly url: string;
  readonly #index = new KeyIndex();
  readonly #leases: LeaseTable;
  readonly #hub = new WatchHub();
  readonly #log: CommitLog;
  readonly #parts: EngineParts;
  readonly #limits: KeyLimits;
  #closed = false;

  constructor(options: MemoryStoreOptions = {}) {
    this.#leases = new LeaseTable(options.clock ?? systemClock, () => this.#expire());
    this.#log = new CommitLog(options.journal, this.#hub);
    this.#parts = { index: this.#index, leases: this.#leases, log: this.#log };
    this.url = options.url ?? 'memory:';
    this.#limits = options.limits ?? PORT_LIMITS;
    if (options.firstLeaseId !== undefined) this.#leases.nextId = options.firstLeaseId;
  }

  /** The current head revision (not waiting for durability). */
  get revision(): number {
    return this.#log.head;
  }

  /** History before this revision is gone (0: never compacted). */
  get compactRevision(): number {
    return this.#log.compacted;
  }

  /** Number of live watchers. */
  get watcherCount(): number {
    return this.#hub.size;
  }

  // ---- reads -------------------------------------------------------------------------------------

  async get(key: string, options: ReadOptions = {}): Promise<KeyValue | undefined> {
    checkKey(key, 'key', this.#limits);
    const rev = await this.#readRevision(options);
    return this.#index.valueAt(key, rev, this.#log.head);
  }

  async range(selector: string | KeySelector, options: RangeOptions = {}): Promise<RangeResult> {
    const range = toRange(selector, true, this.#limits);
    checkLimit(options.limit);
    const rev = await this.#readRevision(options);
    return this.#index.range(
      range,
      rev,
      this.#log.head,
      options.limit ?? 0,
      options.keysOnly === true,
      options.countOnly === true,
    );
  }

  async headRevision(options: { signal?: AbortSignal } = {}): Promise<number> {
    return this.#readRevision(options);
  }

  // ---- writes ------------------------------------------------------------------------------------

  async put(key: string, value: ValueInput, options: PutOptions = {}): Promise<PutResult> {
    this.#usable(options.signal);
    checkKey(key, 'key', this.#limits);
    const bytes = toBytes(value, key, this.#limits);
    const lease = options.lease ?? NO_LEASE;
    this.#leases.checkForPut(lease, key);
    const prev = this.#index.live(key);
    const ws = this.#begin();
    ws.put(key, bytes, lease);
    this.#log.seal(ws);
    await this.#log.waitDurable(ws.revision);
    return options.prevKv === true ? { revision: ws.revision, prev } : { revision: ws.revision };
  }

  async delete(selector: string | KeySelector, options: DeleteOptions = {}): Promise<DeleteResult> {
    this.#usable(options.signal);
    const range = toRange(selector, false, this.#limits);
    const keys = this.#index.liveKeysIn(range);
    if (keys.length === 0) {
      const rev = await this.#readRevision({});
      return { revision: rev, deleted: 0, prev: [] };
    }
    const ws = this.#begin();
    const prev: KeyValue[] = [];
    for (const key of keys) {
      const old = ws.delete(key);
      if (old !== undefined) prev.push(old);
    }
    this.#log.seal(ws);
    await this.#log.waitDurable(ws.revision);
    return { revision: ws.revision, deleted: prev.length, prev: options.prevKv === true ? prev : [] };
  }

  async txn(
    compares: readonly Compare[],
    onSuccess: readonly TxnOp[],
    onFailure: readonly TxnOp[] = [],
    options: { signal?: AbortSignal } = {},
  ): Promise<TxnResult> {
    this.#usable(options.signal);
    validateCompares(compares, this.#limits);
    const success = prepareOps(onSuccess, 'onSuccess', this.#limits);
    const failure = prepareOps(onFailure, 'onFailure', this.#limits);
    const succeeded = compares.every((c) => evaluateCompare(c, this.#index.live(c.key)));
    const ops = succeeded ? success : failure;
    for (const op of ops) if (op.type === 'put') this.#leases.checkForPut(op.lease, op.key);

    const ws = this.#begin();
    const results = applyOps(ops, ws, this.#index, this.#log.head);
    if (ws.changes.length > 0) {
      this.#log.seal(ws);
      await this.#log.waitDurable(ws.revision);
      return { succeeded, revision: ws.revision, results };
    }
    return { succeeded, revision: await this.#readRevision({}), results };
  }

  /**
   * etcd's full transaction (see txn-tree.ts): what the embedded server uses for requests that
   * {@link txn} cannot express. Throws as {@link txn} does, plus `MUSTER_NOT_FOUND` when a put that
   * keeps the value or lease names a missing key, and `MUSTER_COMPACTED` / `MUSTER_FUTURE_REVISION`
   * for a read at a revision that is not held.
   */
  async txnTree(tree: TxnTree, options: { signal?: AbortSignal } = {}): Promise<TxnTreeResult> {
    this.#usable(options.signal);
    checkTree(tree);
    const path = choosePath(tree, this.#index);
    const head = this.#log.head;
    for (const op of pathOps(path)) {
      if (op.type === 'range') {
        if (op.revision > 0) this.#log.readAt(op.revision, head);
      } else if (op.type === 'put') {
        const cur = op.ignoreValue || op.ignoreLease ? this.#index.live(op.key) : undefined;
        if ((op.ignoreValue || op.ignoreLease) && cur === undefined) {
          throw new MusterError(
            'MUSTER_NOT_FOUND',
            `key '${op.key}' does not exist; nothing to keep the value or lease of`,
            {
              details: { key: op.key },
            },
          );
        }
        this.#leases.checkForPut(op.ignoreLease && cur !== undefined ? cur.lease : op.lease, op.key);
      }
    }
    const ws = this.#begin();
    const results = applyPath(path, ws, this.#index, head);
    if (ws.changes.length > 0) {
      this.#log.seal(ws);
      await this.#log.waitDurable(ws.revision);
      return { succeeded: path.succeeded, revision: ws.revision, results };
    }
    return { succeeded: path.succeeded, revision: await this.#readRevision({}), results };
  }

  async compact(revision: number): Promise<void> {
    this.#usable(undefined);
    checkRevision(revision);
    const log = this.#log;
    await log.waitDurable(log.head);
    log.checkCompact(revision);
    compactTo(revision, this.#index, log);
    log.append({ type: 'compact', revision });
    await log.flush();
  }

  // ---- watches -----------------------------------------------------------------------------------

  watch(selector: string | KeySelector, options: WatchOptions = {}): Watch {
    const range = toRange(selector, true, this.#limits);
    // Everything up to the durable head is already queued for the watcher.
    const w = this.#hub.create(range, options, () => this.#log.durable);
    if (this.#closed || this.#log.failed) {
      w.fail(this.#log.failed ?? closedError());
      return w;
    }
    if (options.signal?.aborted) {
      w.close();
      return w;
    }
    const from = options.fromRevision;
    if (from !== undefined) {
      // Replay history the watcher asked for, then go live; both happen before any new commit.
      try {
        checkRevision(from, 'fromRevision');
        this.#log.catchUp(w, from);
      } catch (err) {
        w.fail(err);
        return w;
      }
    }
    this.#hub.add(w);
    return w;
  }

  // ---- leases ------------------------------------------------------------------------------------

  async grantLease(ttlSeconds: number, options: { signal?: AbortSignal } = {}): Promise<LeaseGrant> {
    this.#usable(options.signal);
    checkTtl(ttlSeconds);
    const id = this.#leases.grant(ttlSeconds);
    this.#log.append({ type: 'lease-grant', id, ttlSeconds });
    await this.#log.flush();
    return { id, ttlSeconds };
  }

  async keepAlive(id: LeaseId, options: { signal?: AbortSignal } = {}): Promise<number> {
    this.#usable(options.signal);
    checkLeaseId(id);
    const ttl = this.#leases.renew(id);
    if (ttl === undefined) throw leaseNotFound(id);
    return ttl;
  }

  async revokeLease(id: LeaseId, options: { signal?: AbortSignal } = {}): Promise<void> {
    this.#usable(options.signal);
    checkLeaseId(id);
    if (!this.#leases.has(id)) throw leaseNotFound(id);
    const rev = this.#endLease(id);
    await this.#log.waitDurable(rev);
  }

  async leaseTimeToLive(id: LeaseId, options: { signal?: AbortSignal } = {}): Promise<LeaseInfo | undefined> {
    this.#usable(options.signal);
    checkLeaseId(id);
    return this.#leases.timeToLive(id);
  }

  /**
   * The keys attached to lease `id` now (`undefined` for an unknown lease), synchronously: serve's
   * RBAC checks them in the same event-loop turn as the change they guard, so no other request can
   * attach a key between the check and the change.
   */
  leaseKeys(id: LeaseId): readonly string[] | undefined {
    return this.#leases.timeToLive(id)?.keys;
  }

  /** Ids of every live lease (the etcd `Leases` RPC). */
  leaseIds(): LeaseId[] {
    return this.#leases.ids();
  }

  // ---- lifecycle ---------------------------------------------------------------------------------

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#leases.stop();
    this.#hub.failAll(closedError());
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  // ---- durability hooks (used by the embedded server) ---------------------------------------------

  /** Re-applies a journal entry at start-up, without journaling it again or notifying anyone. */
  replay(entry: JournalEntry): void {
    replayEntry(this.#parts, entry);
  }

  /** The durable state at the durable head (history before it is not included). */
  snapshot(): EngineSnapshot {
    return takeSnapshot(this.#parts);
  }

  /**
   * Loads a snapshot into an empty engine. Leases restart their full TTL, as etcd does. The engine
   * takes the snapshot's key-value objects as they are (no copy: start-up with 100,000 keys is
   * allocation-bound); the caller must not change them afterwards.
   */
  restore(snapshot: EngineSnapshot): void {
    restoreSnapshot(this.#parts, snapshot);
  }

  // ---- internals ---------------------------------------------------------------------------------

  #usable(signal: AbortSignal | undefined): void {
    if (this.#log.failed) throw this.#log.failed;
    if (this.#closed) throw closedError();
    throwIfAborted(signal);
  }

  async #readRevision(options: ReadOptions): Promise<number> {
    this.#usable(options.signal);
    const head = this.#log.head;
    await this.#log.waitDurable(head);
    return this.#log.readAt(options.revision, head);
  }

  /** Starts the next revision. */
  #begin(): WriteSet {
    return new WriteSet(this.#log.head + 1, this.#index, this.#leases);
  }

  /** Ends a lease: deletes its keys at one new revision (if it has keys). Returns the head revision. */
  #endLease(id: LeaseId): number {
    const attached = this.#leases.take(id);
    if (attached === undefined) return this.#log.head;
    const keys = [...attached].sort(compareKeys);
    if (keys.length > 0) {
      const ws = this.#begin();
      for (const key of keys) ws.delete(key);
      this.#log.seal(ws);
    }
    this.#log.append({ type: 'lease-end', id });
    return this.#log.head;
  }

  /** Ends the leases whose time is up (the lease table's timer). */
  #expire(): void {
    if (this.#closed || this.#log.failed) return;
    const next = this.#leases.endExpired((id) => this.#endLease(id));
    if (this.#log.behind) {
      this.#log.flush().catch(() => {
        // the failure is recorded in the commit log and surfaces on the next operation
      });
    }
    if (next !== Infinity) this.#leases.arm(next);
  }
}

/** What {@link MemoryStore.txnTree} answers. */
export interface TxnTreeResult {
  readonly succeeded: boolean;
  readonly revision: number;
  readonly results: readonly TreeResult[];
}

/** Opens an in-process memory store. */
export function openMemoryStore(options: MemoryStoreOptions = {}): MemoryStore {
  return new MemoryStore(options);
}

function closedError(): MusterError {
  return new MusterError('MUSTER_CLOSED', 'the store is closed');
}
