/**
 * Validation and canonical forms of placement input: partitions and instances hashed into typed
 * arrays and put in an order that does not depend on the order the caller listed them in.
 */
import { invalidArgument } from '../errors.js';
import { murmur3, subSeed } from './hash.js';
import { DEFAULT_WEIGHT, MAX_PARTITIONS, type PlacementInstance } from './types.js';

/** Partitions, hashed, with `order` listing indices by (hash, id): the canonical processing order. */
export interface PartitionTable {
  readonly ids: readonly string[];
  readonly lo: Uint32Array;
  readonly hi: Uint32Array;
  readonly order: Uint32Array;
}

/** Sub-seed numbers, one per role, so partition, instance and key hashes are independent. */
export const SEED_PARTITION = 0;
export const SEED_INSTANCE = 2;
export const SEED_KEY = 4;

const SORT_INDEX_BITS = 2 ** 21; // hi × 2^21 + index stays below 2^53, exact in a double
const countCache: { count: number; seed: number; table: PartitionTable }[] = [];
const COUNT_CACHE_SIZE = 4;

/** Validates and hashes the partition list (or count). Throws MUSTER_INVALID_ARGUMENT on bad input. */
export function partitionTable(partitions: readonly string[] | number, seed: number): PartitionTable {
  if (typeof partitions === 'number') {
    if (!Number.isInteger(partitions) || partitions < 0 || partitions > MAX_PARTITIONS) {
      throw invalidArgument(
        `partitions must be an integer count in [0, ${MAX_PARTITIONS}] or a list of ids`,
        {
          field: 'partitions',
          value: partitions,
        },
      );
    }
    const hit = countCache.find((c) => c.count === partitions && c.seed === seed);
    if (hit !== undefined) return hit.table;
    const ids = Array.from({ length: partitions }, (_, i) => String(i));
    const table = buildTable(ids, seed);
    countCache.unshift({ count: partitions, seed, table });
    countCache.length = Math.min(countCache.length, COUNT_CACHE_SIZE);
    return table;
  }
  if (!Array.isArray(partitions)) {
    throw invalidArgument('partitions must be an array of ids or a count', { field: 'partitions' });
  }
  if (partitions.length > MAX_PARTITIONS) {
    throw invalidArgument(`at most ${MAX_PARTITIONS} partitions are supported`, {
      field: 'partitions',
      count: partitions.length,
    });
  }
  for (let i = 0; i < partitions.length; i++) {
    const id: unknown = partitions[i];
    if (typeof id !== 'string' || id.length === 0) {
      throw invalidArgument(`partition ids must be non-empty strings (index ${i})`, {
        field: 'partitions',
        index: i,
      });
    }
  }
  const at = listCache.findIndex((c) => c.seed === seed && sameIds(c.table.ids, partitions));
  const table = at >= 0 ? listCache[at]!.table : buildTable(partitions.slice(), seed);
  if (at >= 0) listCache.splice(at, 1);
  listCache.unshift({ seed, table });
  listCache.length = Math.min(listCache.length, LIST_CACHE_SIZE);
  return table;
}

// Recent list-form tables, reused while a caller passes the same ids (compared by content).
const listCache: { seed: number; table: PartitionTable }[] = [];
const LIST_CACHE_SIZE = 4;

function sameIds(a: readonly string[], b: readonly string[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function buildTable(ids: readonly string[], seed: number): PartitionTable {
  const n = ids.length;
  const lo = new Uint32Array(n);
  const hi = new Uint32Array(n);
  const s0 = subSeed(seed, SEED_PARTITION);
  const s1 = subSeed(seed, SEED_PARTITION + 1);
  for (let i = 0; i < n; i++) {
    const id = ids[i]!;
    lo[i] = murmur3(id, s0);
    hi[i] = murmur3(id, s1);
  }
  return { ids, lo, hi, order: canonicalOrder(ids, lo, hi) };
}

/**
 * Indices sorted by (hi, lo, id): the canonical processing order, independent of input order. Uses a
 * numeric sort of `hi × 2^21 + index` (exact in a double) when there are at most `exactKeyLimit`
 * entries, a comparator sort otherwise. Throws MUSTER_INVALID_ARGUMENT on a duplicate id.
 */
export function canonicalOrder(
  ids: readonly string[],
  lo: Uint32Array,
  hi: Uint32Array,
  exactKeyLimit = SORT_INDEX_BITS,
): Uint32Array {
  const n = ids.length;
  const order = new Uint32Array(n);
  if (n <= Math.min(exactKeyLimit, SORT_INDEX_BITS)) {
    const keys = new Float64Array(n);
    for (let i = 0; i < n; i++) keys[i] = hi[i]! * SORT_INDEX_BITS + i;
    keys.sort();
    for (let i = 0; i < n; i++) order[i] = keys[i]! % SORT_INDEX_BITS;
  } else {
    for (let i = 0; i < n; i++) order[i] = i;
    order.sort((a, b) => hi[a]! - hi[b]!);
  }
  // Runs with equal `hi` are in input order so far: re-sort them by (lo, id), which also puts
  // duplicate ids next to each other.
  for (let start = 0; start < n;) {
    let end = start + 1;
    while (end < n && hi[order[end]!] === hi[order[start]!]) end++;
    if (end - start > 1) {
      const run = Array.from(order.subarray(start, end)).sort((a, b) => compareById(lo, ids, a, b));
      for (let k = 0; k < run.length; k++) {
        if (k > 0 && ids[run[k]!] === ids[run[k - 1]!]) {
          throw invalidArgument(`partition id '${ids[run[k]!]}' appears more than once`, {
            field: 'partitions',
            partition: ids[run[k]!],
          });
        }
        order[start + k] = run[k]!;
      }
    }
    start = end;
  }
  return order;
}

function compareById(lo: Uint32Array, ids: readonly string[], a: number, b: number): number {
  const d = lo[a]! - lo[b]!;
  if (d !== 0) return d;
  const x = ids[a]!;
  const y = ids[b]!;
  return x < y ? -1 : x > y ? 1 : 0;
}

/** Index of partition `id` in `table`, or -1; a binary search over the canonical order. */
export function findPartition(table: PartitionTable, id: string, seed: number): number {
  const h = murmur3(id, subSeed(seed, SEED_PARTITION + 1));
  const l = murmur3(id, subSeed(seed, SEED_PARTITION));
  const { order, hi, lo, ids } = table;
  let a = 0;
  let b = order.length;
  while (a < b) {
    const m = (a + b) >>> 1;
    const p = order[m]!;
    const c =
      hi[p]! !== h ? hi[p]! - h : lo[p]! !== l ? lo[p]! - l : ids[p]! < id ? -1 : ids[p]! > id ? 1 : 0;
    if (c === 0) return p;
    if (c < 0) a = m + 1;
    else b = m;
  }
  return -1;
}

/**
 * Active instances in canonical order — grouped by weight (ascending), by id within a group — with
 * their hashes; plus the state of every known instance.
 */
export interface InstanceTable {
  readonly ids: readonly string[];
  /** Hash halves as int32 (the bits of the unsigned hash), which keeps the hot loop on integers. */
  readonly lo: Int32Array;
  readonly hi: Int32Array;
  readonly weight: Float64Array;
  /** Position of each active instance in id order, the tie-breaker between equal scores. */
  readonly rank: Int32Array;
  /** Weight groups: group g spans [groupStart[g], groupStart[g + 1]). */
  readonly groupStart: readonly number[];
  /** Sum of active weights, added in id order so it is the same for every input order. */
  readonly totalWeight: number;
  /** Every instance id → its index among the active ones, or -1 when draining. */
  readonly index: ReadonlyMap<string, number>;
}

/** Validates the instance list. Throws MUSTER_INVALID_ARGUMENT on bad input. */
export function instanceTable(instances: readonly PlacementInstance[], seed: number): InstanceTable {
  if (!Array.isArray(instances)) throw invalidArgument('instances must be an array', { field: 'instances' });
  const all: { id: string; weight: number; active: boolean }[] = [];
  for (let i = 0; i < instances.length; i++) {
    const inst: unknown = instances[i];
    const { id, weight = DEFAULT_WEIGHT, state = 'active' } = (inst ?? {}) as PlacementInstance;
    if (typeof id !== 'string' || id.length === 0) {
      throw invalidArgument(`instance ids must be non-empty strings (index ${i})`, {
        field: 'instances',
        index: i,
      });
    }
    if (typeof weight !== 'number' || !Number.isFinite(weight) || weight <= 0) {
      throw invalidArgument(`instance '${id}' has weight ${String(weight)}; weights must be finite and > 0`, {
        field: 'instances',
        instance: id,
        weight,
      });
    }
    if (state !== 'active' && state !== 'draining') {
      throw invalidArgument(`instance '${id}' has state '${String(state)}'; use 'active' or 'draining'`, {
        field: 'instances',
        instance: id,
        state,
      });
    }
    all.push({ id, weight, active: state === 'active' });
  }
  all.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  const index = new Map<string, number>();
  const active: { id: string; weight: number; rank: number }[] = [];
  let totalWeight = 0;
  for (let i = 0; i < all.length; i++) {
    const x = all[i]!;
    if (i > 0 && all[i - 1]!.id === x.id) {
      throw invalidArgument(`instance id '${x.id}' appears more than once`, {
        field: 'instances',
        instance: x.id,
      });
    }
    if (x.active) {
      active.push({ id: x.id, weight: x.weight, rank: active.length });
      totalWeight += x.weight;
    }
  }
  active.sort((a, b) => a.weight - b.weight || a.rank - b.rank);
  const n = active.length;
  const lo = new Int32Array(n);
  const hi = new Int32Array(n);
  const weight = new Float64Array(n);
  const rank = new Int32Array(n);
  const groupStart: number[] = [];
  const s0 = subSeed(seed, SEED_INSTANCE);
  const s1 = subSeed(seed, SEED_INSTANCE + 1);
  for (let j = 0; j < n; j++) {
    const x = active[j]!;
    if (j === 0 || active[j - 1]!.weight !== x.weight) groupStart.push(j);
    lo[j] = murmur3(x.id, s0);
    hi[j] = murmur3(x.id, s1);
    weight[j] = x.weight;
    rank[j] = x.rank;
    index.set(x.id, j);
  }
  groupStart.push(n);
  for (const x of all) if (!x.active) index.set(x.id, -1);
  return { ids: active.map((x) => x.id), lo, hi, weight, rank, groupStart, totalWeight, index };
}
