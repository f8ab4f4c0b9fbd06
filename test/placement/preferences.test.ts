import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { lnUnit, pairScore } from '../../src/placement/hash.js';
import { preferences } from '../../src/placement/first-choice.js';
import { instanceTable, partitionTable } from '../../src/placement/tables.js';
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
