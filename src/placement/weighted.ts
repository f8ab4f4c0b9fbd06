/**
 * The preference table when instances have different weights: per weight group one scan keeps the
 * group's top two by raw score, then the groups compete on the weighted score ln(u) / weight. One pass
 * over the instances and at most two logarithms per group and partition.
 */
import { lnUnit } from './hash.js';
import type { InstanceTable, PartitionTable } from './tables.js';

// Per-group scratch: the group's best and second (indices, -1 if none) and their signed scores.
const gBest: number[] = [];
const gBestScore: number[] = [];
const gNext: number[] = [];
const gNextScore: number[] = [];

/**
 * Fills `first` and `second` exactly as {@link bestInstance} would: `first` is the best group winner
 * by (weighted score desc, id rank asc); `second` is the best of the first's group runner-up and the
 * other groups' winners, by the same order.
 */
export function topTwoWeighted(
  parts: PartitionTable,
  inst: InstanceTable,
  first: Int32Array,
  second: Int32Array,
): void {
  const { groupStart, weight, rank } = inst;
  const iLo = inst.lo;
  const iHi = inst.hi;
  const groups = groupStart.length - 1;
  const n = parts.ids.length;
  for (let p = 0; p < n; p++) {
    const a = parts.lo[p]! | 0;
    const b = parts.hi[p]! | 0;
    for (let g = 0; g < groups; g++) {
      let best = -1;
      let top = -0x80000001;
      let next = -1;
      let runnerUp = -0x80000001;
      const end = groupStart[g + 1]!;
      for (let j = groupStart[g]!; j < end; j++) {
        let h = a ^ iLo[j]!;
        h = Math.imul(h ^ (h >>> 16), 0x7feb352d);
        h ^= b ^ iHi[j]!;
        h = Math.imul(h ^ (h >>> 15), 0x846ca68b);
        h = h ^ (h >>> 16) ^ 0x80000000;
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
      }
      gBest[g] = best;
      gBestScore[g] = top;
      gNext[g] = next;
      gNextScore[g] = runnerUp;
    }
    // First: the best group winner.
    let f = -1;
    let fg = -1;
    let fScore = -Infinity;
    for (let g = 0; g < groups; g++) {
      const j = gBest[g]!;
      const score = lnUnit(gBestScore[g]! + 0x80000000) / weight[j]!;
      if (score > fScore || (score === fScore && rank[j]! < rank[f]!)) {
        fScore = score;
        f = j;
        fg = g;
      }
    }
    // Second: the first's group runner-up against the other groups' winners.
    let s = -1;
    let sScore = -Infinity;
    for (let g = 0; g < groups; g++) {
      const j = g === fg ? gNext[g]! : gBest[g]!;
      if (j < 0) continue;
      const h = g === fg ? gNextScore[g]! : gBestScore[g]!;
      const score = lnUnit(h + 0x80000000) / weight[j]!;
      if (score > sScore || (score === sScore && rank[j]! < rank[s]!)) {
        sScore = score;
        s = j;
      }
    }
    first[p] = f;
    second[p] = s;
  }
}
