/**
 * Rendezvous preference: the best instance for a partition, and the table of every partition's first
 * choice, which is cached because it depends only on the partitions, the active instances and the seed —
 * not on pins or current owners, which change far more often.
 */
import { lnUnit } from './hash.js';
import type { InstanceTable, PartitionTable } from './tables.js';

let cache: { parts: PartitionTable; key: string; first: Int32Array } | undefined;

/**
 * `first[p]` = {@link bestInstance} of partition p among all active instances. Reuses the previous
 * table when called again with the same partition table, active instances, weights and seed. The
 * returned array is shared: callers must not modify it.
 */
export function firstChoices(parts: PartitionTable, inst: InstanceTable, seed: number): Int32Array {
  const key = instanceKey(inst, seed);
  if (cache !== undefined && cache.parts === parts && cache.key === key) return cache.first;
  const n = parts.ids.length;
  const first = new Int32Array(n);
  const { lo, hi } = parts;
  if (inst.groupStart.length === 2) {
    // One weight group (the usual case): the same scan as groupBest(), inlined for speed.
    const iLo = inst.lo;
    const iHi = inst.hi;
    const m = inst.ids.length;
    for (let p = 0; p < n; p++) {
      const a = lo[p]! | 0;
      const b = hi[p]! | 0;
      let best = 0;
      let top = -0x80000000;
      for (let j = 0; j < m; j++) {
        let h = a ^ iLo[j]!;
        h = Math.imul(h ^ (h >>> 16), 0x7feb352d);
        h ^= b ^ iHi[j]!;
        h = Math.imul(h ^ (h >>> 15), 0x846ca68b);
        h = h ^ (h >>> 16) ^ 0x80000000;
        if (h > top) {
          top = h;
          best = j;
        }
      }
      first[p] = best;
    }
  } else {
    for (let p = 0; p < n; p++) first[p] = bestInstance(lo[p]!, hi[p]!, inst, null);
  }
  cache = { parts, key, first };
  return first;
}

function instanceKey(inst: InstanceTable, seed: number): string {
  let key = String(seed);
  for (let j = 0; j < inst.ids.length; j++) key += `\n${inst.ids[j]!}\t${inst.weight[j]!}`;
  return key;
}

/**
 * The active instance with the highest weighted rendezvous score for the partition hashed to
 * (pLo, pHi), considering only instances with `free[j] > 0` when `free` is given; -1 if none.
 *
 * Within a weight group the highest raw 32-bit score wins (ties: lowest id). Across groups the
 * group winners compete on ln(u) / weight — the classic weighted rendezvous score, one deterministic
 * log per group rather than per instance.
 */
export function bestInstance(pLo: number, pHi: number, t: InstanceTable, free: Int32Array | null): number {
  const { lo, hi, groupStart } = t;
  const groups = groupStart.length - 1;
  if (groups === 1) return groupBest(pLo, pHi, lo, hi, 0, groupStart[1]!, free);
  let bestJ = -1;
  let bestScore = -Infinity;
  for (let g = 0; g < groups; g++) {
    const j = groupBest(pLo, pHi, lo, hi, groupStart[g]!, groupStart[g + 1]!, free);
    if (j < 0) continue;
    const score = lnUnit(groupScore + 0x80000000) / t.weight[j]!;
    if (score > bestScore || (score === bestScore && t.rank[j]! < t.rank[bestJ]!)) {
      bestScore = score;
      bestJ = j;
    }
  }
  return bestJ;
}

/** The score of the last {@link groupBest} winner, as a signed int32 (unsigned score − 2^31). */
let groupScore = 0;

/**
 * Highest-scoring instance in [start, end) (with room, when `free` is given), lowest index on ties; -1
 * if none. Scores are compared as signed int32 (xor 2^31 keeps the unsigned order), which keeps V8 on
 * integer registers. This is pairScore(), inlined: these loops run P × N times.
 */
function groupBest(
  pLo: number,
  pHi: number,
  lo: Int32Array,
  hi: Int32Array,
  start: number,
  end: number,
  free: Int32Array | null,
): number {
  let best = -1;
  let top = -0x80000000;
  if (free === null) {
    for (let j = start; j < end; j++) {
      let h = pLo ^ lo[j]!;
      h = Math.imul(h ^ (h >>> 16), 0x7feb352d);
      h ^= pHi ^ hi[j]!;
      h = Math.imul(h ^ (h >>> 15), 0x846ca68b);
      h = h ^ (h >>> 16) ^ 0x80000000;
      if (h > top || best < 0) {
        top = h;
        best = j;
      }
    }
  } else {
    for (let j = start; j < end; j++) {
      if (free[j]! <= 0) continue;
      let h = pLo ^ lo[j]!;
      h = Math.imul(h ^ (h >>> 16), 0x7feb352d);
      h ^= pHi ^ hi[j]!;
      h = Math.imul(h ^ (h >>> 15), 0x846ca68b);
      h = h ^ (h >>> 16) ^ 0x80000000;
      if (h > top || best < 0) {
        top = h;
        best = j;
      }
    }
  }
  groupScore = top;
  return best;
}
