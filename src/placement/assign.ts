/**
 * The placement function: weighted rendezvous hashing with a bounded-load cap, pins first, and a
 * preference for current owners where keeping them costs nothing. Pure and deterministic; see
 * docs/placement.md for the algorithm and the argument for its guarantees.
 */
import { invalidArgument } from '../errors.js';
import { bestInstance, preferences } from './first-choice.js';
import { findPartition, instanceTable, partitionTable } from './tables.js';
import {
  DEFAULT_EPSILON,
  DEFAULT_SEED,
  type IgnoredPin,
  type PartitionMap,
  type PlacementInput,
  type PlacementResult,
} from './types.js';

/** Absorbs floating-point noise in (1 + ε) × share so that an exact integer share is not rounded up. */
const CAP_SLACK = 1e-9;

/**
 * Assigns every partition to one active instance.
 *
 * Identical input gives an identical result on every machine, whatever the order of the lists. With
 * at least one active instance every partition is assigned exactly once, nothing goes to a draining
 * instance, pins to active instances are honoured, and no instance exceeds its cap
 * ⌈(1 + ε) × P × weight / total weight⌉ except by its own pins. With no active instance every partition
 * is reported in `unassigned` (nothing is thrown). Cost: O(P × N) integer hash steps, P log P for the
 * canonical order.
 *
 * **Stable under an acquisition as assigned**: if `R = assign(x)` has `stats.overCap === 0` and
 * partition `p` has no current owner in `x`, then `x` with `currentOwners[p] = R.assignments[p]`
 * gives `R` again, so a caller may skip that recomputation. Argument, with `a` = R's instance for
 * `p` and `f` its first choice: unowned, `p` got `f` in round 2 (free only decreases, so once refused
 * it can be placed on `f` only over the cap) or walked to `a` in round 4b. If `a = f`, owning it puts
 * `p` in round 1, before its round-2 turn: `f` had room left for it after round 1, so every partition
 * that took `f` in between still finds room, and from the end of round 2 the free counts are the
 * same. If `a ≠ f`, `p` is refused in rounds 2–3 as before and kept on `a` in round 4a, whose room
 * it had then; a round-4b walker before it sees one slot less on `a`, which changes nothing — it
 * took `a` with a slot to spare, or chose another instance with `a` available, and the walk picks
 * the best-scoring instance with room, which removing a candidate that lost does not change.
 *
 * @throws MusterError `MUSTER_INVALID_ARGUMENT` for malformed input: duplicate partition or instance
 *   ids, empty ids, weights that are ≤ 0 or not finite, an unknown state, ε < 0 or not finite, a seed
 *   that is not an integer in [0, 2^32), or pin/owner values that are not strings.
 */
export function assign(input: PlacementInput): PlacementResult {
  if (input === null || typeof input !== 'object') {
    throw invalidArgument(
      'assign() takes an object { partitions, instances, pins?, currentOwners?, settings? }',
    );
  }
  const { epsilon, seed } = resolveSettings(input.settings);
  const parts = partitionTable(input.partitions, seed);
  const inst = instanceTable(input.instances, seed);
  const pins = entriesOf(input.pins, 'pins');
  const owners = input.currentOwners;
  if (owners !== undefined && (typeof owners !== 'object' || owners === null)) {
    throw invalidArgument('currentOwners must be a Map or a plain object', { field: 'currentOwners' });
  }
  const P = parts.ids.length;
  const A = inst.ids.length;
  const { order } = parts;

  const assigned = new Int32Array(P).fill(-1);
  const ignoredPins: IgnoredPin[] = [];
  const free = new Int32Array(A);
  const share = new Float64Array(A);
  for (let a = 0; a < A; a++) {
    share[a] = (P * inst.weight[a]!) / inst.totalWeight;
    free[a] = Math.min(P, Math.max(0, Math.ceil((1 + epsilon) * share[a]! - CAP_SLACK)));
  }
  const caps = Int32Array.from(free);

  let pinned = 0;
  for (const [partition, instance] of pins) {
    const p = findPartition(parts, partition, seed);
    const a = inst.index.get(instance);
    if (p < 0) ignoredPins.push({ partition, instance, reason: 'unknown-partition' });
    else if (a === undefined) ignoredPins.push({ partition, instance, reason: 'instance-absent' });
    else if (a < 0) ignoredPins.push({ partition, instance, reason: 'instance-draining' });
    else {
      assigned[p] = a;
      free[a]!--;
      pinned++;
    }
  }
  ignoredPins.sort((x, y) => compareStrings(x.partition, y.partition));

  let firstChoice = 0;
  let kept = 0;
  let overflowed = 0;
  let overCap = 0;
  if (A > 0) {
    const { first, second } = preferences(parts, inst, seed);
    const owner = ownerIndices(owners, parts.ids, inst.index, assigned);
    // Round 1: partitions already on their first choice stay, in canonical order, up to the cap.
    // Round 2: partitions without an active owner go to their first choice if it has room.
    // Round 3: partitions on another instance move to their first choice only while it is below its
    //          fair share (this is how a joining or heavier instance fills up).
    // The rest overflow (round 4).
    const pool = new Uint8Array(P);
    for (let round = 1; round <= 3; round++) {
      for (let i = 0; i < P; i++) {
        const p = order[i]!;
        if (assigned[p]! >= 0 || pool[p] === 1) continue;
        const f = first[p]!;
        const o = owner[p]!;
        if (round === 1 ? o !== f : round === 2 ? o >= 0 : false) continue;
        const room = free[f]! > 0 && (round !== 3 || caps[f]! - free[f]! < share[f]!);
        if (room) {
          assigned[p] = f;
          free[f]!--;
          firstChoice++;
        } else pool[p] = 1;
      }
    }
    // Round 4a: keep every overflowing partition whose owner still has room, before anything walks,
    // so that partitions shed elsewhere cannot crowd a partition out of an owner it could have kept.
    for (let i = 0; i < P; i++) {
      const p = order[i]!;
      const o = owner[p]!;
      if (pool[p] !== 1 || o < 0 || free[o]! <= 0) continue;
      assigned[p] = o;
      free[o]!--;
      pool[p] = 0;
      kept++;
    }
    // Round 4b: the rest walk down their preference order to the first instance with room.
    for (let i = 0; i < P; i++) {
      const p = order[i]!;
      if (pool[p] !== 1) continue;
      const f = first[p]!;
      const s = second[p]!;
      let a =
        free[f]! > 0 ? f : s >= 0 && free[s]! > 0 ? s : bestInstance(parts.lo[p]!, parts.hi[p]!, inst, free);
      if (a < 0) {
        a = first[p]!;
        overCap++;
      } else overflowed++;
      assigned[p] = a;
      free[a]!--;
    }
  }

  const assignments = new Map<string, string>();
  const unassigned: string[] = [];
  for (let p = 0; p < P; p++) {
    const a = assigned[p]!;
    if (a >= 0) assignments.set(parts.ids[p]!, inst.ids[a]!);
    else unassigned.push(parts.ids[p]!);
  }
  const byId = Array.from({ length: A }, (_, a) => a).sort((x, y) => inst.rank[x]! - inst.rank[y]!);
  const loads = new Map<string, number>();
  const capMap = new Map<string, number>();
  for (const a of byId) {
    loads.set(inst.ids[a]!, caps[a]! - free[a]!);
    capMap.set(inst.ids[a]!, caps[a]!);
  }
  return {
    assignments,
    unassigned,
    ignoredPins,
    loads,
    caps: capMap,
    stats: { pinned, firstChoice, kept, overflowed, overCap },
  };
}

function resolveSettings(settings: PlacementInput['settings']): { epsilon: number; seed: number } {
  const epsilon = settings?.epsilon ?? DEFAULT_EPSILON;
  const seed = settings?.seed ?? DEFAULT_SEED;
  if (typeof epsilon !== 'number' || !Number.isFinite(epsilon) || epsilon < 0) {
    throw invalidArgument(`epsilon must be a finite number ≥ 0, got ${String(epsilon)}`, {
      field: 'settings.epsilon',
      value: epsilon,
    });
  }
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) {
    throw invalidArgument(`seed must be an integer in [0, 2^32), got ${String(seed)}`, {
      field: 'settings.seed',
      value: seed,
    });
  }
  return { epsilon, seed };
}

function entriesOf(map: PartitionMap | undefined, field: string): [string, string][] {
  if (map === undefined) return [];
  if (typeof map !== 'object' || map === null) {
    throw invalidArgument(`${field} must be a Map or a plain object`, { field });
  }
  const entries: [unknown, unknown][] =
    map instanceof Map ? [...(map as ReadonlyMap<unknown, unknown>)] : Object.entries(map);
  for (const [k, v] of entries) {
    if (typeof k !== 'string' || typeof v !== 'string') {
      throw invalidArgument(`${field} must map partition ids to instance ids (strings)`, {
        field,
        partition: String(k),
      });
    }
  }
  return entries as [string, string][];
}

/**
 * The active index of each partition's current owner, or -1 (no owner, unknown or draining owner,
 * or pinned partition). One pass with the lookups inlined: this runs on every call.
 */
function ownerIndices(
  map: PartitionMap | undefined,
  ids: readonly string[],
  index: ReadonlyMap<string, number>,
  assigned: Int32Array,
): Int32Array {
  const owner = new Int32Array(ids.length).fill(-1);
  if (map === undefined) return owner;
  const asMap = map instanceof Map ? (map as ReadonlyMap<string, unknown>) : undefined;
  const asRecord = map as Record<string, unknown>;
  for (let p = 0; p < ids.length; p++) {
    if (assigned[p]! >= 0) continue;
    const id = ids[p]!;
    const o = asMap !== undefined ? asMap.get(id) : Object.hasOwn(asRecord, id) ? asRecord[id] : undefined;
    if (o === undefined) continue;
    if (typeof o !== 'string') {
      throw invalidArgument('currentOwners must map partition ids to instance ids (strings)', {
        field: 'currentOwners',
        partition: id,
      });
    }
    const a = index.get(o);
    if (a !== undefined) owner[p] = a;
  }
  return owner;
}

function compareStrings(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
