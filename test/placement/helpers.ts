/**
 * Arbitraries and checkers shared by the placement tests.
 */
import fc from 'fast-check';
import type { PlacementInput, PlacementInstance, PlacementResult } from '../../src/placement/index.js';

/** Short ids, sometimes from a tiny alphabet (so similar strings meet), sometimes any Unicode. */
export const idArb = fc.oneof(
  fc.string({ minLength: 1, maxLength: 4, unit: fc.constantFrom('a', 'b', '0', '1', '-') }),
  fc.string({ minLength: 1, maxLength: 8 }),
  fc.string({ minLength: 1, maxLength: 4, unit: 'grapheme' }),
);

export const instanceArb: fc.Arbitrary<PlacementInstance> = fc.record(
  {
    id: idArb,
    weight: fc.oneof(
      fc.constant(1),
      fc.integer({ min: 1, max: 5 }),
      fc.double({ min: 0.05, max: 20, noNaN: true }),
    ),
    state: fc.constantFrom<'active' | 'draining'>('active', 'active', 'active', 'draining'),
  },
  { requiredKeys: ['id'] },
);

/** A random, valid placement input: partitions, instances, pins (some impossible), owners, settings. */
export const inputArb: fc.Arbitrary<PlacementInput> = fc
  .record({
    partitions: fc.oneof(fc.integer({ min: 0, max: 300 }), fc.uniqueArray(idArb, { maxLength: 300 })),
    instances: fc.uniqueArray(instanceArb, { maxLength: 12, selector: (i) => i.id }),
    epsilon: fc.constantFrom(0, 0.02, 0.1, 0.25, 1),
    seed: fc.integer({ min: 0, max: 0xffffffff }),
    pinRate: fc.constantFrom(0, 0, 0.05, 0.3),
    ownerRate: fc.constantFrom(0, 0.5, 1),
    choice: fc.infiniteStream(fc.nat()),
  })
  .map(({ partitions, instances, epsilon, seed, pinRate, ownerRate, choice }) => {
    const ids =
      typeof partitions === 'number' ? Array.from({ length: partitions }, (_, i) => String(i)) : partitions;
    const targets = [...instances.map((i) => i.id), 'ghost-instance'];
    const it = choice[Symbol.iterator]();
    const next = (): number => it.next().value as number;
    const pins = new Map<string, string>();
    const owners = new Map<string, string>();
    for (const p of ids) {
      if (next() % 1000 < pinRate * 1000) pins.set(p, targets[next() % targets.length]!);
      if (next() % 1000 < ownerRate * 1000) owners.set(p, targets[next() % targets.length]!);
    }
    if (pinRate > 0) pins.set('ghost-partition', targets[0]!);
    const input: PlacementInput = {
      partitions,
      instances,
      pins,
      ...(ownerRate > 0 ? { currentOwners: owners } : {}),
      settings: { epsilon, seed },
    };
    return input;
  });

/** Fisher–Yates with a small deterministic generator. */
export function shuffle<T>(items: readonly T[], seed: number): T[] {
  const out = [...items];
  let s = seed >>> 0 || 1;
  for (let i = out.length - 1; i > 0; i--) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    const j = s % (i + 1);
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

/** The same input with every list and map in another order. */
export function shuffled(input: PlacementInput, seed: number): PlacementInput {
  const mapOf = (m: PlacementInput['pins']): Map<string, string> | undefined =>
    m === undefined ? undefined : new Map(shuffle([...(m instanceof Map ? m : Object.entries(m))], seed + 7));
  const pins = mapOf(input.pins);
  const owners = mapOf(input.currentOwners);
  return {
    partitions: typeof input.partitions === 'number' ? input.partitions : shuffle(input.partitions, seed),
    instances: shuffle(input.instances, seed + 3),
    ...(pins ? { pins } : {}),
    ...(owners ? { currentOwners: owners } : {}),
    ...(input.settings ? { settings: input.settings } : {}),
  };
}

/** The ids a PlacementInput's `partitions` stands for. */
export function partitionIds(input: PlacementInput): string[] {
  const p = input.partitions;
  return typeof p === 'number' ? Array.from({ length: p }, (_, i) => String(i)) : [...p];
}

/** Partitions per instance, counted from the assignment map. */
export function countLoads(assignments: ReadonlyMap<string, string>): Map<string, number> {
  const loads = new Map<string, number>();
  for (const to of assignments.values()) loads.set(to, (loads.get(to) ?? 0) + 1);
  return loads;
}

/**
 * The fewest moves any assignment with the same per-instance loads as `after` could need:
 * every partition arriving on an instance that grew (or leaving one that shrank) must move.
 */
export function minimumMoves(
  before: ReadonlyMap<string, string>,
  after: ReadonlyMap<string, string>,
): number {
  const lb = countLoads(before);
  const la = countLoads(after);
  let up = 0;
  let down = 0;
  for (const id of new Set([...lb.keys(), ...la.keys()])) {
    const d = (la.get(id) ?? 0) - (lb.get(id) ?? 0);
    if (d > 0) up += d;
    else down -= d;
  }
  return Math.max(up, down);
}

/** Sorted entries, for comparing results independently of Map insertion order. */
export function sortedEntries(result: PlacementResult): [string, string][] {
  return [...result.assignments].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
}
