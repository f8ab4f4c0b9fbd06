/**
 * The memory engine: the Store port in one process, with MVCC history, leases expired from an
 * injected clock, and ordered watch delivery. The basis of unit tests and simulations, and — with a
 * {@link Journal} — of the durable embedded server.
 */
import { type Clock, systemClock, type TimerHandle } from '../../clock.js';
import { MusterError, throwIfAborted } from '../../errors.js';
import {
  checkKey,
  checkLeaseId,
  checkRevision,
  checkTtl,
  compareKeys,
  describeValue,
  EMPTY_BYTES,
  inRange,
  MAX_TXN_OPS,
  type Range,
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
  type TxnOpResult,
  type TxnResult,
  type ValueInput,
  type Watch,
  type WatchOptions,
} from '../types.js';
import type { EngineSnapshot, Journal, JournalChange, JournalEntry } from './journal.js';
import { evaluateCompare, validateCompares } from '../txn-rules.js';
import { type CommittedEvent, MemoryWatch, WatchHub } from './watch-hub.js';

export interface MemoryStoreOptions {
  /** Time source for lease expiry. Default: the system clock. */
  clock?: Clock;
  /** Durability hook (the embedded server). Default: none — state lives only in this process. */
  journal?: Journal;
  /** Name used in {@link Store.url}. Default: `memory:`. */
  url?: string;
}

type Tombstone = { readonly key: string; readonly modRevision: number; readonly deleted: true };
type Version = KeyValue | Tombstone;

interface LeaseState {
  readonly id: LeaseId;
  readonly ttlSeconds: number;
  expiresAt: number; // monotonic ms
  readonly keys: Set<string>;
}

const isTombstone = (v: Version): v is Tombstone => 'deleted' in v;

/** The in-process engine. Create with {@link openMemoryStore} or `openStore('memory:')`. */
export class MemoryStore implements Store {
  readonly url: string;
  readonly #clock: Clock;
  readonly #journal: Journal | undefined;
  readonly #history = new Map<string, Version[]>();
  readonly #live = new Map<string, KeyValue>();
  #sorted: string[] = [];
  #log: { readonly revision: number; readonly events: CommittedEvent[] }[] = [];
  #logBase = 2; // revision of #log[0]
  #rev = 1;
  #durableRev = 1;
  #compactRev = 0;
  readonly #leases = new Map<LeaseId, LeaseState>();
  #nextLease = 1;
  #expiryTimer: TimerHandle | undefined;
  #expiryAt = Infinity;
  readonly #hub = new WatchHub();
  #flushing: Promise<void> | undefined;
  #failed: MusterError | undefined;
  #closed = false;

  constructor(options: MemoryStoreOptions = {}) {
    this.#clock = options.clock ?? systemClock;
    this.#journal = options.journal;
    this.url = options.url ?? 'memory:';
  }

  /** The current head revision (not waiting for durability). */
  get revision(): number {
    return this.#rev;
  }

  /** Number of live watchers. */
  get watcherCount(): number {
    return this.#hub.size;
  }

  // ---- reads -------------------------------------------------------------------------------------

  async get(key: string, options: ReadOptions = {}): Promise<KeyValue | undefined> {
    checkKey(key);
    const rev = await this.#readRevision(options);
    return this.#valueAt(key, rev);
  }

  async range(selector: string | KeySelector, options: RangeOptions = {}): Promise<RangeResult> {
    const range = toRange(selector, true);
    checkLimit(options.limit);
    const rev = await this.#readRevision(options);
    return this.#rangeAt(
      range,
      rev,
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
    checkKey(key);
    const bytes = toBytes(value, key);
    const lease = options.lease ?? NO_LEASE;
    this.#checkLeaseForPut(lease, key);
    const prev = this.#live.get(key);
    const rev = this.#rev + 1;
    const events: CommittedEvent[] = [];
    const changes: JournalChange[] = [];
    this.#applyPut(rev, key, bytes, lease, events, changes);
    this.#seal(rev, events, changes);
    await this.#waitDurable(rev);
    return options.prevKv === true ? { revision: rev, prev } : { revision: rev };
  }

  async delete(selector: string | KeySelector, options: DeleteOptions = {}): Promise<DeleteResult> {
    this.#usable(options.signal);
    const range = toRange(selector, false);
    const keys = this.#liveKeysIn(range);
    if (keys.length === 0) {
      const rev = await this.#readRevision({});
      return { revision: rev, deleted: 0, prev: [] };
    }
    const rev = this.#rev + 1;
    const events: CommittedEvent[] = [];
    const changes: JournalChange[] = [];
    const prev: KeyValue[] = [];
    for (const key of keys) {
      const old = this.#applyDelete(rev, key, events, changes);
      if (old !== undefined) prev.push(old);
    }
    this.#seal(rev, events, changes);
    await this.#waitDurable(rev);
    return { revision: rev, deleted: prev.length, prev: options.prevKv === true ? prev : [] };
  }

  async txn(
    compares: readonly Compare[],
    onSuccess: readonly TxnOp[],
    onFailure: readonly TxnOp[] = [],
    options: { signal?: AbortSignal } = {},
  ): Promise<TxnResult> {
    this.#usable(options.signal);
    validateCompares(compares);
    const success = prepareOps(onSuccess, 'onSuccess');
    const failure = prepareOps(onFailure, 'onFailure');
    const succeeded = compares.every((c) => evaluateCompare(c, this.#live.get(c.key)));
    const ops = succeeded ? success : failure;
    for (const op of ops) if (op.type === 'put') this.#checkLeaseForPut(op.lease, op.key);

    const rev = this.#rev + 1;
    const events: CommittedEvent[] = [];
    const changes: JournalChange[] = [];
    const results: TxnOpResult[] = [];
    for (const op of ops) {
      if (op.type === 'put') {
        this.#applyPut(rev, op.key, op.value, op.lease, events, changes);
        results.push({ type: 'put', revision: rev });
      } else if (op.type === 'delete') {
        let deleted = 0;
        for (const key of this.#liveKeysIn(op.range)) {
          if (this.#applyDelete(rev, key, events, changes) !== undefined) deleted++;
        }
        results.push({ type: 'delete', deleted });
      } else {
        const r = this.#rangeAt(
          op.range,
          this.#rev,
          op.limit,
          op.keysOnly,
          false,
          events.length > 0 ? rev : undefined,
        );
        results.push({ type: 'range', kvs: r.kvs, count: r.count, more: r.more });
      }
    }
    if (changes.length > 0) {
      this.#seal(rev, events, changes);
      await this.#waitDurable(rev);
      return { succeeded, revision: rev, results };
    }
    return { succeeded, revision: await this.#readRevision({}), results };
  }

  async compact(revision: number): Promise<void> {
    this.#usable(undefined);
    checkRevision(revision);
    await this.#waitDurable(this.#rev);
    if (revision > this.#rev) {
      throw new MusterError(
        'MUSTER_FUTURE_REVISION',
        `cannot compact to revision ${revision}: the head is ${this.#rev}`,
        {
          details: { revision },
        },
      );
    }
    if (revision <= this.#compactRev) {
      throw compactedError(revision, this.#compactRev);
    }
    this.#compactTo(revision);
    this.#journal?.append({ type: 'compact', revision });
    await this.#flushJournal();
  }

  // ---- watches -----------------------------------------------------------------------------------

  watch(selector: string | KeySelector, options: WatchOptions = {}): Watch {
    const range = toRange(selector, true);
    const w = new MemoryWatch(range, options.prevKv === true, options.signal, {
      onClose: (x) => this.#hub.remove(x),
      onProgress: (x) => {
        // Everything up to the durable head is already queued for this watcher.
        x.pushProgress(this.#durableRev);
      },
    });
    if (this.#closed || this.#failed) {
      w.fail(this.#failed ?? closedError());
      return w;
    }
    if (options.signal?.aborted) {
      w.close();
      return w;
    }
    const from = options.fromRevision;
    if (from !== undefined) {
      try {
        checkRevision(from, 'fromRevision');
      } catch (err) {
        w.fail(err);
        return w;
      }
      if (from < this.#logBase && from <= this.#durableRev) {
        w.fail(compactedError(from, this.#compactRev));
        return w;
      }
      // Replay history the watcher asked for, then go live; both happen before any new commit.
      for (let r = from; r <= this.#durableRev; r++) {
        const entry = this.#log[r - this.#logBase];
        if (entry === undefined) continue;
        for (const e of entry.events) if (inRange(range, e.event.kv.key)) w.pushEvent(r, e);
      }
      // Revisions committed but not yet durable are published by the flush loop, in order.
    }
    this.#hub.add(w);
    return w;
  }

  // ---- leases ------------------------------------------------------------------------------------

  async grantLease(ttlSeconds: number, options: { signal?: AbortSignal } = {}): Promise<LeaseGrant> {
    this.#usable(options.signal);
    checkTtl(ttlSeconds);
    const id = String(this.#nextLease++);
    this.#addLease(id, ttlSeconds);
    this.#journal?.append({ type: 'lease-grant', id, ttlSeconds });
    await this.#flushJournal();
    return { id, ttlSeconds };
  }

  async keepAlive(id: LeaseId, options: { signal?: AbortSignal } = {}): Promise<number> {
    this.#usable(options.signal);
    checkLeaseId(id);
    const lease = this.#leases.get(id);
    if (lease === undefined) throw leaseNotFound(id);
    lease.expiresAt = this.#clock.monotonic() + lease.ttlSeconds * 1000;
    return lease.ttlSeconds;
  }

  async revokeLease(id: LeaseId, options: { signal?: AbortSignal } = {}): Promise<void> {
    this.#usable(options.signal);
    checkLeaseId(id);
    if (!this.#leases.has(id)) throw leaseNotFound(id);
    const rev = this.#endLease(id);
    await this.#waitDurable(rev);
  }

  async leaseTimeToLive(id: LeaseId, options: { signal?: AbortSignal } = {}): Promise<LeaseInfo | undefined> {
    this.#usable(options.signal);
    checkLeaseId(id);
    const lease = this.#leases.get(id);
    if (lease === undefined) return undefined;
    const left = Math.max(0, Math.floor((lease.expiresAt - this.#clock.monotonic()) / 1000));
    return {
      id,
      ttlSeconds: left,
      grantedTtlSeconds: lease.ttlSeconds,
      keys: [...lease.keys].sort(compareKeys),
    };
  }

  /** Ids of every live lease (the etcd `Leases` RPC). */
  leaseIds(): LeaseId[] {
    return [...this.#leases.keys()];
  }

  // ---- lifecycle ---------------------------------------------------------------------------------

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#expiryTimer !== undefined) this.#clock.clearTimeout(this.#expiryTimer);
    this.#expiryTimer = undefined;
    this.#hub.failAll(closedError());
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  // ---- durability hooks (used by the embedded server) ---------------------------------------------

  /** Re-applies a journal entry at start-up, without journaling it again or notifying anyone. */
  replay(entry: JournalEntry): void {
    switch (entry.type) {
      case 'write': {
        if (entry.revision !== this.#rev + 1) {
          throw new MusterError(
            'MUSTER_CORRUPT_DATA',
            `journal entry for revision ${entry.revision} follows revision ${this.#rev}; the log has a gap`,
            { details: { revision: entry.revision } },
          );
        }
        const events: CommittedEvent[] = [];
        for (const c of entry.changes) {
          if ('deleted' in c) this.#applyDelete(entry.revision, c.key, events, []);
          else {
            if (c.lease !== NO_LEASE && !this.#leases.has(c.lease)) this.#addLease(c.lease, 1);
            this.#applyPut(entry.revision, c.key, c.value, c.lease, events, []);
          }
        }
        this.#rev = this.#durableRev = entry.revision;
        this.#log.push({ revision: entry.revision, events });
        return;
      }
      case 'lease-grant':
        this.#addLease(entry.id, entry.ttlSeconds);
        this.#nextLease = Math.max(this.#nextLease, Number(entry.id) + 1);
        return;
      case 'lease-end':
        this.#removeLease(entry.id);
        return;
      case 'compact':
        if (entry.revision > this.#compactRev && entry.revision <= this.#rev) this.#compactTo(entry.revision);
        return;
    }
  }

  /** The durable state at the durable head (history before it is not included). */
  snapshot(): EngineSnapshot {
    const rev = this.#durableRev;
    const kvs: EngineSnapshot['kvs'][number][] = [];
    for (const key of this.#sorted) {
      const kv = this.#valueAt(key, rev);
      if (kv !== undefined) kvs.push(kv);
    }
    return {
      revision: rev,
      compactRevision: this.#compactRev,
      nextLeaseId: String(this.#nextLease),
      leases: [...this.#leases.values()].map((l) => ({ id: l.id, ttlSeconds: l.ttlSeconds })),
      kvs,
    };
  }

  /**
   * Loads a snapshot into an empty engine. Leases restart their full TTL, as etcd does. The engine
   * takes the snapshot's key-value objects as they are (no copy: start-up with 100,000 keys is
   * allocation-bound); the caller must not change them afterwards.
   */
  restore(snapshot: EngineSnapshot): void {
    if (this.#rev !== 1 || this.#history.size > 0) {
      throw new MusterError('MUSTER_INTERNAL', 'restore() needs an empty engine');
    }
    this.#nextLease = Number(snapshot.nextLeaseId);
    for (const l of snapshot.leases) this.#addLease(l.id, l.ttlSeconds);
    for (const kv of snapshot.kvs) {
      const copy: KeyValue = kv;
      this.#history.set(kv.key, [copy]);
      this.#live.set(kv.key, copy);
      this.#sorted.push(kv.key);
      if (kv.lease !== NO_LEASE) {
        if (!this.#leases.has(kv.lease)) this.#addLease(kv.lease, 1);
        this.#leases.get(kv.lease)?.keys.add(kv.key);
      }
    }
    this.#sorted.sort(compareKeys);
    this.#rev = this.#durableRev = snapshot.revision;
    this.#compactRev = Math.max(snapshot.compactRevision, 0);
    this.#logBase = snapshot.revision + 1;
    this.#log = [];
  }

  // ---- internals ---------------------------------------------------------------------------------

  #usable(signal: AbortSignal | undefined): void {
    if (this.#failed) throw this.#failed;
    if (this.#closed) throw closedError();
    throwIfAborted(signal);
  }

  async #readRevision(options: ReadOptions): Promise<number> {
    this.#usable(options.signal);
    const head = this.#rev;
    await this.#waitDurable(head);
    if (options.revision === undefined) return head;
    checkRevision(options.revision);
    if (options.revision > head) {
      throw new MusterError(
        'MUSTER_FUTURE_REVISION',
        `revision ${options.revision} is newer than the store head ${head}`,
        { details: { revision: options.revision } },
      );
    }
    if (options.revision < this.#compactRev) throw compactedError(options.revision, this.#compactRev);
    return options.revision;
  }

  #valueAt(key: string, rev: number): KeyValue | undefined {
    if (rev === this.#rev) return this.#live.get(key);
    const versions = this.#history.get(key);
    if (versions === undefined) return undefined;
    // last version with modRevision <= rev
    let lo = 0;
    let hi = versions.length - 1;
    let found = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if ((versions[mid] as Version).modRevision <= rev) {
        found = mid;
        lo = mid + 1;
      } else hi = mid - 1;
    }
    const v = versions[found];
    return v === undefined || isTombstone(v) ? undefined : v;
  }

  #rangeAt(
    range: Range,
    rev: number,
    limit: number | undefined,
    keysOnly: boolean | undefined,
    countOnly: boolean,
    visibleAt?: number,
  ): RangeResult {
    const kvs: KeyValue[] = [];
    let count = 0;
    const at = visibleAt ?? rev;
    const max = limit !== undefined && limit > 0 ? limit : Infinity;
    const visit = (key: string): void => {
      const kv = visibleAt !== undefined ? this.#live.get(key) : this.#valueAt(key, at);
      if (kv === undefined) return;
      count++;
      if (!countOnly && kvs.length < max) kvs.push(keysOnly === true ? { ...kv, value: EMPTY_BYTES } : kv);
    };
    this.#scan(range, visit);
    return { kvs, revision: rev, count, more: count > kvs.length && !countOnly };
  }

  /** Visits every key with history inside `range`, in key order. */
  #scan(range: Range, visit: (key: string) => void): void {
    if (range.kind === 'key') {
      if (this.#history.has(range.key)) visit(range.key);
      return;
    }
    const start = range.kind === 'prefix' ? range.prefix : range.start;
    for (let i = lowerBound(this.#sorted, start); i < this.#sorted.length; i++) {
      const key = this.#sorted[i] as string;
      if (range.kind === 'prefix' ? !key.startsWith(range.prefix) : compareKeys(key, range.end) >= 0) break;
      visit(key);
    }
  }

  #liveKeysIn(range: Range): string[] {
    const keys: string[] = [];
    this.#scan(range, (key) => {
      if (this.#live.has(key)) keys.push(key);
    });
    return keys;
  }

  #checkLeaseForPut(lease: LeaseId, key: string): void {
    if (lease === NO_LEASE) return;
    checkLeaseId(lease);
    if (!this.#leases.has(lease)) throw leaseNotFound(lease, key);
  }

  #applyPut(
    rev: number,
    key: string,
    value: Uint8Array,
    lease: LeaseId,
    events: CommittedEvent[],
    changes: JournalChange[],
  ): void {
    const prev = this.#live.get(key);
    const kv: KeyValue = {
      key,
      value,
      createRevision: prev?.createRevision ?? rev,
      modRevision: rev,
      version: (prev?.version ?? 0) + 1,
      lease,
    };
    if (prev !== undefined && prev.lease !== NO_LEASE && prev.lease !== lease) {
      this.#leases.get(prev.lease)?.keys.delete(key);
    }
    if (lease !== NO_LEASE) this.#leases.get(lease)?.keys.add(key);
    this.#record(key, kv);
    this.#live.set(key, kv);
    const event = { type: 'put' as const, kv, prev };
    events.push({ event, bare: prev === undefined ? event : { type: 'put', kv } });
    changes.push({ key, value, lease });
  }

  #applyDelete(
    rev: number,
    key: string,
    events: CommittedEvent[],
    changes: JournalChange[],
  ): KeyValue | undefined {
    const prev = this.#live.get(key);
    if (prev === undefined) return undefined;
    if (prev.lease !== NO_LEASE) this.#leases.get(prev.lease)?.keys.delete(key);
    this.#record(key, { key, modRevision: rev, deleted: true });
    this.#live.delete(key);
    const kv: KeyValue = {
      key,
      value: EMPTY_BYTES,
      createRevision: 0,
      modRevision: rev,
      version: 0,
      lease: NO_LEASE,
    };
    events.push({ event: { type: 'delete', kv, prev }, bare: { type: 'delete', kv } });
    changes.push({ key, deleted: true });
    return prev;
  }

  #record(key: string, version: Version): void {
    const versions = this.#history.get(key);
    if (versions !== undefined) {
      versions.push(version);
      return;
    }
    this.#history.set(key, [version]);
    const at = lowerBound(this.#sorted, key);
    this.#sorted.splice(at, 0, key);
  }

  /** Makes revision `rev` the head: logs it, journals it, and publishes it if there is no journal. */
  #seal(rev: number, events: CommittedEvent[], changes: JournalChange[]): void {
    this.#rev = rev;
    this.#log.push({ revision: rev, events });
    if (this.#journal === undefined) {
      this.#durableRev = rev;
      this.#hub.publish(rev, events);
      return;
    }
    this.#journal.append({ type: 'write', revision: rev, changes });
  }

  #waitDurable(rev: number): Promise<void> {
    if (rev <= this.#durableRev) return Promise.resolve();
    return this.#flushJournal();
  }

  /** Group commit: one journal flush covers everything appended before it started. */
  async #flushJournal(): Promise<void> {
    const journal = this.#journal;
    if (journal === undefined) return;
    const target = this.#rev;
    while (this.#durableRev < target || this.#flushing !== undefined) {
      if (this.#failed) throw this.#failed;
      if (this.#flushing === undefined) {
        this.#flushing = this.#flushOnce(journal).finally(() => {
          this.#flushing = undefined;
        });
      }
      await this.#flushing;
      if (this.#durableRev >= target) break;
    }
    if (this.#failed) throw this.#failed;
    if (this.#durableRev < target) await this.#flushOnce(journal);
  }

  async #flushOnce(journal: Journal): Promise<void> {
    const target = this.#rev;
    try {
      await journal.flush();
    } catch (err) {
      this.#failed = new MusterError(
        'MUSTER_INTERNAL',
        'the write-ahead log could not be made durable; the store stopped',
        {
          cause: err,
        },
      );
      this.#hub.failAll(this.#failed);
      throw this.#failed;
    }
    for (let r = this.#durableRev + 1; r <= target; r++) {
      const entry = this.#log[r - this.#logBase];
      this.#durableRev = r;
      if (entry !== undefined) this.#hub.publish(r, entry.events);
    }
    this.#durableRev = Math.max(this.#durableRev, target);
  }

  #compactTo(revision: number): void {
    this.#compactRev = revision;
    const drop = Math.max(0, Math.min(this.#log.length, revision - this.#logBase));
    if (drop > 0) {
      this.#log = this.#log.slice(drop);
      this.#logBase += drop;
    }
    const removed = new Set<string>();
    for (const [key, versions] of this.#history) {
      // keep the newest version at or before `revision`, and everything after it
      let keepFrom = 0;
      for (let i = versions.length - 1; i >= 0; i--) {
        if ((versions[i] as Version).modRevision <= revision) {
          keepFrom = i;
          break;
        }
      }
      const first = versions[keepFrom] as Version;
      if (keepFrom === versions.length - 1 && isTombstone(first) && first.modRevision <= revision) {
        this.#history.delete(key);
        removed.add(key);
      } else if (keepFrom > 0) {
        this.#history.set(key, versions.slice(keepFrom));
      }
    }
    if (removed.size > 0) this.#sorted = this.#sorted.filter((k) => !removed.has(k));
  }

  #addLease(id: LeaseId, ttlSeconds: number): void {
    const expiresAt = this.#clock.monotonic() + ttlSeconds * 1000;
    this.#leases.set(id, { id, ttlSeconds, expiresAt, keys: new Set() });
    this.#armExpiry(expiresAt);
  }

  #removeLease(id: LeaseId): void {
    const lease = this.#leases.get(id);
    if (lease === undefined) return;
    this.#leases.delete(id);
    for (const key of lease.keys) {
      const kv = this.#live.get(key);
      if (kv !== undefined && kv.lease === id) this.#live.delete(key);
    }
  }

  /** Ends a lease: deletes its keys at one new revision (if it has keys). Returns the head revision. */
  #endLease(id: LeaseId): number {
    const lease = this.#leases.get(id);
    if (lease === undefined) return this.#rev;
    const keys = [...lease.keys].sort(compareKeys);
    this.#leases.delete(id);
    if (keys.length > 0) {
      const rev = this.#rev + 1;
      const events: CommittedEvent[] = [];
      const changes: JournalChange[] = [];
      for (const key of keys) this.#applyDelete(rev, key, events, changes);
      this.#seal(rev, events, changes);
    }
    this.#journal?.append({ type: 'lease-end', id });
    return this.#rev;
  }

  #armExpiry(at: number): void {
    if (this.#closed || at >= this.#expiryAt) return;
    if (this.#expiryTimer !== undefined) this.#clock.clearTimeout(this.#expiryTimer);
    this.#expiryAt = at;
    this.#expiryTimer = this.#clock.setTimeout(
      () => this.#expire(),
      Math.max(0, at - this.#clock.monotonic()),
    );
  }

  #expire(): void {
    this.#expiryTimer = undefined;
    this.#expiryAt = Infinity;
    if (this.#closed || this.#failed) return;
    const now = this.#clock.monotonic();
    let next = Infinity;
    for (const lease of [...this.#leases.values()]) {
      if (lease.expiresAt <= now) this.#endLease(lease.id);
      else next = Math.min(next, lease.expiresAt);
    }
    if (this.#journal !== undefined && this.#durableRev < this.#rev) {
      this.#flushJournal().catch(() => {
        // the failure is recorded in #failed and surfaces on the next operation
      });
    }
    if (next !== Infinity) this.#armExpiry(next);
  }
}

/** Opens an in-process memory store. */
export function openMemoryStore(options: MemoryStoreOptions = {}): MemoryStore {
  return new MemoryStore(options);
}

type PreparedOp =
  | { type: 'put'; key: string; value: Uint8Array; lease: LeaseId }
  | { type: 'delete'; range: Range }
  | { type: 'range'; range: Range; limit: number; keysOnly: boolean };

function prepareOps(ops: readonly TxnOp[], branch: string): PreparedOp[] {
  if (!Array.isArray(ops))
    throw new MusterError('MUSTER_INVALID_ARGUMENT', `${branch} must be an array of operations`);
  if (ops.length > MAX_TXN_OPS) {
    throw new MusterError(
      'MUSTER_TXN_TOO_LARGE',
      `${branch} has ${ops.length} operations; the limit is ${MAX_TXN_OPS}`,
    );
  }
  const prepared: PreparedOp[] = ops.map((op: TxnOp) => {
    switch (op?.type) {
      case 'put': {
        checkKey(op.key);
        const lease = op.lease ?? NO_LEASE;
        if (lease !== NO_LEASE) checkLeaseId(lease);
        return { type: 'put', key: op.key, value: toBytes(op.value, op.key), lease };
      }
      case 'delete':
        return { type: 'delete', range: toRange(op.selector, false) };
      case 'range':
        checkLimit(op.limit);
        return {
          type: 'range',
          range: toRange(op.selector, true),
          limit: op.limit ?? 0,
          keysOnly: op.keysOnly === true,
        };
      default:
        throw new MusterError(
          'MUSTER_INVALID_ARGUMENT',
          `${branch} has an operation of unknown type '${String((op as { type?: unknown } | null)?.type)}'; use put, delete or range`,
        );
    }
  });
  // etcd refuses a transaction that writes the same key twice (puts, or a put inside a deleted range).
  const putKeys = new Set<string>();
  for (const op of prepared) {
    if (op.type !== 'put') continue;
    if (putKeys.has(op.key)) {
      throw new MusterError(
        'MUSTER_INVALID_ARGUMENT',
        `${branch} puts key '${op.key}' twice; a transaction may write a key once`,
        {
          details: { key: op.key },
        },
      );
    }
    putKeys.add(op.key);
  }
  for (const op of prepared) {
    if (op.type !== 'delete') continue;
    for (const key of putKeys) {
      if (inRange(op.range, key)) {
        throw new MusterError('MUSTER_INVALID_ARGUMENT', `${branch} both puts and deletes key '${key}'`, {
          details: { key },
        });
      }
    }
  }
  return prepared;
}

function checkLimit(limit: unknown): void {
  if (limit !== undefined && (typeof limit !== 'number' || !Number.isSafeInteger(limit) || limit < 0)) {
    throw new MusterError(
      'MUSTER_INVALID_ARGUMENT',
      `limit must be a non-negative integer, got ${describeValue(limit)}`,
    );
  }
}

function lowerBound(sorted: readonly string[], key: string): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (compareKeys(sorted[mid] as string, key) < 0) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function compactedError(revision: number, compactRevision: number): MusterError {
  return new MusterError(
    'MUSTER_COMPACTED',
    `revision ${revision} has been compacted (history before ${compactRevision} is gone); re-list and watch from the new revision`,
    { details: { revision, compactRevision } },
  );
}

function leaseNotFound(id: LeaseId, key?: string): MusterError {
  return new MusterError(
    'MUSTER_LEASE_NOT_FOUND',
    `lease ${id} does not exist (expired, revoked or never granted)`,
    {
      details: { lease: id, ...(key === undefined ? {} : { key }) },
    },
  );
}

function closedError(): MusterError {
  return new MusterError('MUSTER_CLOSED', 'the store is closed');
}
