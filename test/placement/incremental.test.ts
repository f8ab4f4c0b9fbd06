import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { clearPreferencesCache, preferences } from '../../src/placement/first-choice.js';
import { instanceTable, partitionTable } from '../../src/placement/tables.js';
import type { PlacementInstance } from '../../src/index.js';

/** A membership step: some instances leave or start draining, some join. */
const stepArb = fc.record({
  leave: fc.uniqueArray(fc.nat({ max: 30 }), { maxLength: 4 }),
  join: fc.uniqueArray(fc.integer({ min: 100, max: 140 }), { maxLength: 4 }),
  drain: fc.boolean(),
});

void test('incremental updates of the preference table equal a full recomputation', () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 400 }),
      fc.integer({ min: 1, max: 30 }),
      fc.array(stepArb, { minLength: 1, maxLength: 6 }),
      fc.nat({ max: 0xffffffff }),
      (count, n, steps, seed) => {
        const parts = partitionTable(count, seed);
        let instances: PlacementInstance[] = Array.from({ length: n }, (_, i) => ({ id: `i${i}` }));
        clearPreferencesCache();
        preferences(parts, instanceTable(instances, seed), seed);
        for (const step of steps) {
          const gone = new Set(step.leave.map((k) => `i${k}`));
          const next: PlacementInstance[] = instances.flatMap((x) =>
            gone.has(x.id) ? (step.drain ? [{ id: x.id, state: 'draining' as const }] : []) : [{ id: x.id }],
          );
          for (const k of step.join) if (!next.some((x) => x.id === `i${k}`)) next.push({ id: `i${k}` });
          if (!next.some((x) => x.state !== 'draining')) continue;
          instances = next;
          const table = instanceTable(instances, seed);
          const incremental = preferences(parts, table, seed);
          clearPreferencesCache();
          const fresh = preferences(parts, table, seed);
          assert.deepEqual(incremental.first, fresh.first);
          assert.deepEqual(incremental.second, fresh.second);
        }
      },
    ),
    { numRuns: 300 },
  );
});
