/**
 * The memory engine's multi-version key index: every version of every key since the last compaction,
 * the live value of each key, and the keys in order for range scans.
 *
 * The index knows nothing of leases, journals or watchers; the engine decides which revision a read
 * sees and passes it in.
 */
import { compareKeys, EMPTY_BYTES, type Range } from '../keys.js';
import type { KeyValue, LeaseId, RangeResult } from '../types.js';

type Tombstone = { readonly key: string; readonly modRevision: number; readonly deleted: true };
type Version = KeyValue | Tombstone;

const isTombstone = (v: Version): v is Tombstone => 'deleted' in v;

/** Versions of keys by revision, with the live value of each key at hand. */
export class KeyIndex {
  readonly #history = new Map<string, Version[]>();
  readonly #live = new Map<string, KeyValue>();
  #sorted: string[] = [];

  /** Number of keys with history (live or deleted and not yet compacted away). */
  get size(): number {
    return this.#history.size;
  }

  /** Keys with history, in key order. */
  get keys(): readonly string[] {
    return this.#sorted;
  }

  /** The live value of `key` (as of the newest applied change). */
  live(key: string): KeyValue | undefined {
    return this.#live.get(key);
  }

  /** The value of `key` at revision `rev` (its live value when `rev` is the store's `head`). */
  valueAt(key: string, rev: number, head: number): KeyValue | undefined {
    if (rev === head) return this.#live.get(key);
    // last version with modRevision <= rev
    const versions = this.#history.get(key);
    if (versions === undefined) return undefined;
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

  /** The keys of `range` as of revision `rev` (see {@link valueAt}); `limit` 0 means no limit. */
  range(
    range: Range,
    rev: number,
    head: number,
    limit: number | undefined,
    keysOnly: boolean | undefined,
    countOnly: boolean,
  ): RangeResult {
    const kvs: KeyValue[] = [];
    let count = 0;
    const max = limit !== undefined && limit > 0 ? limit : Infinity;
    const visit = (key: string): void => {
      const kv = this.valueAt(key, rev, head);
      if (kv === undefined) return;
      count++;
      if (!countOnly && kvs.length < max) kvs.push(keysOnly === true ? { ...kv, value: EMPTY_BYTES } : kv);
    };
    this.#scan(range, visit);
    return { kvs, revision: rev, count, more: count > kvs.length && !countOnly };
  }

  /** The live keys inside `range`, in key order. */
  liveKeysIn(range: Range): string[] {
    const keys: string[] = [];
    this.#scan(range, (key) => {
      if (this.#live.has(key)) keys.push(key);
    });
    return keys;
  }

  /** Records `kv` as the newest version of its key. */
  put(kv: KeyValue): void {
    this.#record(kv.key, kv);
    this.#live.set(kv.key, kv);
  }

  /** Records the deletion of `key` at revision `rev`. */
  delete(key: string, rev: number): void {
    this.#record(key, { key, modRevision: rev, deleted: true });
    this.#live.delete(key);
  }

  /** Drops the live value of `key` if it is attached to `lease`, without recording a version. */
  forgetLive(key: string, lease: LeaseId): void {
    const kv = this.#live.get(key);
    if (kv !== undefined && kv.lease === lease) this.#live.delete(key);
  }

  /**
   * Loads key-values into an empty index as their only versions. The index keeps the objects as
   * they are (no copy); the caller must not change them afterwards.
   */
  load(kvs: readonly KeyValue[]): void {
    for (const kv of kvs) {
      this.#history.set(kv.key, [kv]);
      this.#live.set(kv.key, kv);
      this.#sorted.push(kv.key);
    }
    this.#sorted.sort(compareKeys);
  }

  /** Forgets every version older than the newest one at or before `revision`. */
  compact(revision: number): void {
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
