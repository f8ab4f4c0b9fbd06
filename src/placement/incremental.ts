/**
 * Updating the preference table after a small membership change instead of recomputing it.
 *
 * A join or leave among 1,000 instances would otherwise cost a full P × N rescan (about half a second
 * for 100,000 partitions) on every instance at the same moment. With equal weights the update is
 * exact: if neither of a partition's old top two left, its new top two are the best two of
 * {old first, old second} ∪ {joined instances}; otherwise it is rescanned. That is P × (2 + joined)
 * pair scores plus ≈ 2 × left × P for the rescans.
 */
import { bestInstance, type Preferences } from './best-instance.js';
import { pairScore } from './hash.js';
import type { InstanceTable, PartitionTable } from './tables.js';

/** Beyond this many joined + left instances a full recomputation is about as cheap. */
const MAX_INCREMENTAL_CHANGES = 8;

/**
 * The preferences of `parts` over `inst`, derived from `prev` (the preferences over `prevInst`), or
 * undefined when the change is not a small one among instances of a single, unchanged weight.
 * The result is identical to a full recomputation.
 */
export function updatePreferences(
  parts: PartitionTable,
  prevInst: InstanceTable,
  prev: Preferences,
  inst: InstanceTable,
): Preferences | undefined {
  if (prevInst.groupStart.length !== 2 || inst.groupStart.length !== 2) return undefined;
  if (prevInst.weight[0] !== inst.weight[0]) return undefined;
  const oldToNew = new Int32Array(prevInst.ids.length);
  let left = 0;
  for (let j = 0; j < prevInst.ids.length; j++) {
    const k = inst.index.get(prevInst.ids[j]!) ?? -1;
    oldToNew[j] = k;
    if (k < 0) left++;
  }
  const joined: number[] = [];
  for (let k = 0; k < inst.ids.length; k++) {
    if ((prevInst.index.get(inst.ids[k]!) ?? -1) < 0) joined.push(k);
  }
  if (left + joined.length > MAX_INCREMENTAL_CHANGES) return undefined;

  const n = parts.ids.length;
  const first = new Int32Array(n);
  const second = new Int32Array(n);
  const { lo, hi } = parts;
  const iLo = inst.lo;
  const iHi = inst.hi;
  for (let p = 0; p < n; p++) {
    const oldSecond = prev.second[p]!;
    const f = oldToNew[prev.first[p]!]!;
    const s = oldSecond < 0 ? -1 : oldToNew[oldSecond]!;
    const pLo = lo[p]!;
    const pHi = hi[p]!;
    if (f < 0 || (oldSecond >= 0 && s < 0)) {
      const b = bestInstance(pLo, pHi, inst, null);
      first[p] = b;
      second[p] = bestInstance(pLo, pHi, inst, null, b);
      continue;
    }
    // Best two of the candidates by (score desc, index asc) — the order the full scan uses.
    let b1 = f;
    let h1 = pairScore(pLo, pHi, iLo[f]! >>> 0, iHi[f]! >>> 0);
    let b2 = -1;
    let h2 = -1;
    const consider = (j: number): void => {
      const h = pairScore(pLo, pHi, iLo[j]! >>> 0, iHi[j]! >>> 0);
      if (h > h1 || (h === h1 && j < b1)) {
        b2 = b1;
        h2 = h1;
        b1 = j;
        h1 = h;
      } else if (b2 < 0 || h > h2 || (h === h2 && j < b2)) {
        b2 = j;
        h2 = h;
      }
    };
    if (s >= 0) consider(s);
    for (const j of joined) consider(j);
    first[p] = b1;
    second[p] = b2;
  }
  return { first, second };
}
