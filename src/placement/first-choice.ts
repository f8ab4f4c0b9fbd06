/**
 * Rendezvous preference: the best instance for a partition, and the table of every partition's first
 * two choices, which is cached because it depends only on the partitions, the active instances and the seed —
 * not on pins or current owners, which change far more often.
 */
import { type Preferences } from './best-instance.js';
import { updatePreferences } from './incremental.js';
import type { InstanceTable, PartitionTable } from './tables.js';
import { topTwoWeighted } from './weighted.js';

export type { Preferences } from './best-instance.js';
export { bestInstance } from './best-instance.js';

interface CacheEntry {
  readonly parts: PartitionTable;
  readonly seed: number;
  readonly key: string;
  readonly inst: InstanceTable;
  readonly prefs: Preferences;
}

/** One table per partition set and seed, most recent first: a process may place a few services. */
const cache: CacheEntry[] = [];
const CACHE_SIZE = 4;

/** Forgets the cached tables (for tests that compare incremental updates with full computations). */
export function clearPreferencesCache(): void {
  cache.length = 0;
}

function remember(entry: CacheEntry, replacing: number): Preferences {
  if (replacing >= 0) cache.splice(replacing, 1);
  cache.unshift(entry);
  cache.length = Math.min(cache.length, CACHE_SIZE);
  return entry.prefs;
}

/**
 * The two best instances of every partition in rendezvous order, as {@link bestInstance} would pick
 * them. Reuses the previous table when called again with the same partition table, active instances,
 * weights and seed, and updates it incrementally after a small membership change (see
 * incremental.ts). The returned arrays are shared: callers must not modify them.
 */
export function preferences(parts: PartitionTable, inst: InstanceTable, seed: number): Preferences {
  const key = instanceKey(inst, seed);
  const at = cache.findIndex((c) => c.parts === parts && c.seed === seed);
  const hit = cache[at];
  if (hit !== undefined) {
    if (hit.key === key) return remember(hit, at);
    const updated = updatePreferences(parts, hit.inst, hit.prefs, inst);
    if (updated !== undefined) return remember({ parts, seed, key, inst, prefs: updated }, at);
  }
  const n = parts.ids.length;
  const first = new Int32Array(n);
  const second = new Int32Array(n).fill(-1);
  const { lo, hi } = parts;
  if (inst.groupStart.length === 2) {
    topTwoSingleGroup(lo, hi, inst.lo, inst.hi, first, second);
  } else {
    topTwoWeighted(parts, inst, first, second);
  }
  return remember({ parts, seed, key, inst, prefs: { first, second } }, at);
}

/** Below every int32 score, so the first instance scanned always takes the lead. */
const NO_SCORE = -0x80000001;

/**
 * The top two instances of every partition when all weights are equal: pairScore(), inlined, on two
 * partitions at once (two independent dependency chains run about 25 % faster than one on V8). Scores
 * are compared as signed int32 (xor 2^31 keeps the unsigned order); ties go to the lower index.
 */
function topTwoSingleGroup(
  lo: Uint32Array,
  hi: Uint32Array,
  iLo: Int32Array,
  iHi: Int32Array,
  first: Int32Array,
  second: Int32Array,
): void {
  const n = lo.length;
  const m = iLo.length;
  for (let p = 0; p < n; p += 2) {
    const q = p + 1 < n ? p + 1 : p; // an odd tail scores its last partition twice
    const a = lo[p]! | 0;
    const b = hi[p]! | 0;
    const c = lo[q]! | 0;
    const d = hi[q]! | 0;
    let best = -1;
    let top = NO_SCORE;
    let next = -1;
    let runnerUp = NO_SCORE;
    let best2 = -1;
    let top2 = NO_SCORE;
    let next2 = -1;
    let runnerUp2 = NO_SCORE;
    for (let j = 0; j < m; j++) {
      const x = iLo[j]!;
      const y = iHi[j]!;
      let h = a ^ x;
      let k = c ^ x;
      h = Math.imul(h ^ (h >>> 16), 0x7feb352d);
      k = Math.imul(k ^ (k >>> 16), 0x7feb352d);
      h ^= b ^ y;
      k ^= d ^ y;
      h = Math.imul(h ^ (h >>> 15), 0x846ca68b);
      k = Math.imul(k ^ (k >>> 15), 0x846ca68b);
      h = h ^ (h >>> 16) ^ 0x80000000;
      k = k ^ (k >>> 16) ^ 0x80000000;
      if (h > runnerUp) {
        if (h > top) {
          runnerUp = top;
          next = best;
          top = h;
          best = j;
        } else {
          runnerUp = h;
          next = j;
        }
      }
      if (k > runnerUp2) {
        if (k > top2) {
          runnerUp2 = top2;
          next2 = best2;
          top2 = k;
          best2 = j;
        } else {
          runnerUp2 = k;
          next2 = j;
        }
      }
    }
    first[p] = best;
    second[p] = next;
    first[q] = best2;
    second[q] = next2;
  }
}

function instanceKey(inst: InstanceTable, seed: number): string {
  let key = String(seed);
  for (let j = 0; j < inst.ids.length; j++) key += `\n${inst.ids[j]!}\t${inst.weight[j]!}`;
  return key;
}
