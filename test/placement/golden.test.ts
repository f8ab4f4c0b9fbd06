import { test } from 'node:test';
import assert from 'node:assert/strict';
import { assign, partitionForKey } from '../../src/index.js';

// Placement is a contract between processes: every instance of a service, whatever its muster version,
// must compute the same map. These literals pin the output; if this test fails, the change breaks
// mixed-version clusters and must be treated as a breaking change (or given a new `seed` scheme).

void test('golden: weighted assignment of a partition count', () => {
  const r = assign({
    partitions: 12,
    instances: [
      { id: 'alpha' },
      { id: 'beta', weight: 2 },
      { id: 'gamma' },
      { id: 'delta', state: 'draining' },
    ],
    settings: { seed: 7 },
  });
  assert.deepEqual(Object.fromEntries(r.assignments), {
    '0': 'alpha',
    '1': 'beta',
    '2': 'beta',
    '3': 'alpha',
    '4': 'alpha',
    '5': 'gamma',
    '6': 'beta',
    '7': 'beta',
    '8': 'beta',
    '9': 'beta',
    '10': 'beta',
    '11': 'alpha',
  });
});

void test('golden: named partitions, non-ASCII ids included', () => {
  const r = assign({
    partitions: ['orders-0', 'orders-1', 'orders-2', 'orders-3', 'orders-4', 'orders-5', 'ü-6', '🙂-7'],
    instances: [{ id: 'a' }, { id: 'b' }, { id: 'c' }],
  });
  assert.deepEqual(Object.fromEntries(r.assignments), {
    'orders-0': 'c',
    'orders-1': 'a',
    'orders-2': 'c',
    'orders-3': 'a',
    'orders-4': 'a',
    'orders-5': 'c',
    'ü-6': 'b',
    '🙂-7': 'b',
  });
});

void test('golden: partitionForKey', () => {
  assert.deepEqual(
    ['', 'a', 'customer-42', 'ü🙂'].map((k) => partitionForKey(k, 1024)),
    [230, 361, 527, 856],
  );
});
