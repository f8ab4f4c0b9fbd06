import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { isMusterError } from '../../src/index.js';
import { canonicalOrder, findPartition, partitionTable } from '../../src/placement/tables.js';

// Synthetic hashes from tiny ranges, so that equal `hi` (and equal `hi` and `lo`) runs are common.
const entriesArb = fc.uniqueArray(
  fc.record({
    id: fc.string({ minLength: 1, maxLength: 3 }),
    hi: fc.nat({ max: 4 }),
    lo: fc.nat({ max: 3 }),
  }),
  { selector: (e) => e.id, maxLength: 60 },
);

void test('canonical order is (hi, lo, id) on both sorting paths', () => {
  fc.assert(
    fc.property(entriesArb, (entries) => {
      const ids = entries.map((e) => e.id);
      const lo = Uint32Array.from(entries.map((e) => e.lo));
      const hi = Uint32Array.from(entries.map((e) => e.hi));
      const expected = entries
        .map((_, i) => i)
        .sort((a, b) => hi[a]! - hi[b]! || lo[a]! - lo[b]! || (ids[a]! < ids[b]! ? -1 : 1));
      assert.deepEqual([...canonicalOrder(ids, lo, hi)], expected);
      assert.deepEqual([...canonicalOrder(ids, lo, hi, 0)], expected);
    }),
    { numRuns: 500 },
  );
});

void test('duplicates are caught on both sorting paths, even inside equal-hash runs', () => {
  const ids = ['a', 'b', 'a'];
  const lo = Uint32Array.from([1, 1, 1]);
  const hi = Uint32Array.from([2, 2, 2]);
  for (const limit of [undefined, 0]) {
    assert.throws(
      () => canonicalOrder(ids, lo, hi, limit),
      (e) => isMusterError(e, 'MUSTER_INVALID_ARGUMENT'),
    );
  }
});

void test('findPartition locates every id and rejects unknown ones', () => {
  const ids = Array.from({ length: 500 }, (_, i) => `part-${i * 7}`);
  const table = partitionTable(ids, 9);
  ids.forEach((id, i) => assert.equal(findPartition(table, id, 9), i));
  assert.equal(findPartition(table, 'part-1', 9), -1);
  assert.equal(findPartition(partitionTable(0, 9), 'x', 9), -1);
});
