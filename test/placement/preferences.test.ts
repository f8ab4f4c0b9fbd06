import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { lnUnit, pairScore } from '../../src/placement/hash.js';
import { preferences } from '../../src/placement/first-choice.js';
import { instanceTable, partitionTable } from '../../src/placement/tables.js';
import { assign } from '../../src/index.js';
import { instanceArb } from './helpers.js';

void test('first and second choices equal a brute-force weighted rendezvous ranking (score ln(u)/w, ties to lowest id)', () => {
  fc.assert(
    fc.property(
      fc.uniqueArray(instanceArb, { minLength: 1, maxLength: 15, selector: (i) => i.id }),
      fc.integer({ min: 1, max: 60 }),
      fc.nat({ max: 0xffffffff }),
      (instances, count, seed) => {
        const parts = partitionTable(count, seed);
        const inst = instanceTable(instances, seed);
        if (inst.ids.length === 0) return;
        const { first, second } = preferences(parts, inst, seed);
        for (let p = 0; p < count; p++) {
          const ranked = inst.ids
            .map((id, j) => {
              const u = pairScore(parts.lo[p]!, parts.hi[p]!, inst.lo[j]! >>> 0, inst.hi[j]! >>> 0);
              return { id, score: lnUnit(u) / inst.weight[j]! };
            })
            .sort((x, y) => y.score - x.score || (x.id < y.id ? -1 : x.id > y.id ? 1 : 0));
          assert.equal(inst.ids[first[p]!], ranked[0]!.id);
          assert.equal(second[p]! < 0 ? undefined : inst.ids[second[p]!], ranked[1]?.id);
        }
      },
    ),
    { numRuns: 300 },
  );
});

void test('rendezvous winners follow the weights (binomial bounds, 5σ)', () => {
  const P = 40_000;
  for (const weights of [
    [1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
    [1, 2, 3, 4],
    [0.5, 10],
  ]) {
    const instances = weights.map((weight, i) => ({ id: `w${i}`, weight }));
    // A cap that never binds: every partition lands on its rendezvous first choice.
    const r = assign({ partitions: P, instances, settings: { epsilon: 1e9, seed: 3 } });
    const total = weights.reduce((a, b) => a + b, 0);
    weights.forEach((w, i) => {
      const p = w / total;
      const expected = P * p;
      const sigma = Math.sqrt(P * p * (1 - p));
      const got = r.loads.get(`w${i}`)!;
      assert.ok(
        Math.abs(got - expected) < 5 * sigma,
        `weights ${weights.join(':')}: w${i} got ${got}, expected ${expected}`,
      );
    });
  }
});

void test('second choices are spread evenly over the other instances', () => {
  const parts = partitionTable(40_000, 11);
  const inst = instanceTable(
    Array.from({ length: 8 }, (_, i) => ({ id: `s${i}` })),
    11,
  );
  const { first, second } = preferences(parts, inst, 11);
  const pairs = new Map<string, number>();
  for (let p = 0; p < 40_000; p++) {
    assert.notEqual(first[p], second[p]);
    const k = `${first[p]}>${second[p]}`;
    pairs.set(k, (pairs.get(k) ?? 0) + 1);
  }
  assert.equal(pairs.size, 56);
  const expected = 40_000 / 56;
  for (const [k, n] of pairs) assert.ok(Math.abs(n - expected) < 5 * Math.sqrt(expected), `${k}: ${n}`);
});
