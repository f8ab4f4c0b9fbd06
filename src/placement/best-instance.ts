/**
 * The best instance for one partition under weighted rendezvous hashing, and the shape of the table of
 * every partition's first two choices. A leaf of the placement capability: first-choice.ts (the cached
 * table) and incremental.ts (its update) both build on it, so neither imports the other's loop.
 */
import { lnUnit } from './hash.js';
import type { InstanceTable } from './tables.js';

/** Every partition's first and second choice among all active instances (second: -1 if none). */
export interface Preferences {
  readonly first: Int32Array;
  readonly second: Int32Array;
}

/**
 * The active instance with the highest weighted rendezvous score for the partition hashed to
 * (pLo, pHi), considering only instances with `free[j] > 0` when `free` is given and never `exclude`;
 * -1 if none.
 *
 * Within a weight group the highest raw 32-bit score wins (ties: lowest id). Across groups the
 * group winners compete on ln(u) / weight — the classic weighted rendezvous score, one deterministic
 * log per group rather than per instance.
 */
export function bestInstance(
  pLo: number,
  pHi: number,
  t: InstanceTable,
  free: Int32Array | null,
  exclude = -1,
): number {
  const { lo, hi, groupStart } = t;
  const groups = groupStart.length - 1;
  if (groups === 1) return groupBest(pLo, pHi, lo, hi, 0, groupStart[1]!, free, exclude);
  let bestJ = -1;
  let bestScore = -Infinity;
  for (let g = 0; g < groups; g++) {
    const j = groupBest(pLo, pHi, lo, hi, groupStart[g]!, groupStart[g + 1]!, free, exclude);
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
  exclude: number,
): number {
  let best = -1;
  let top = -0x80000000;
  if (free === null) {
    for (let j = start; j < end; j++) {
      if (j === exclude) continue;
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
      if (free[j]! <= 0 || j === exclude) continue;
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
