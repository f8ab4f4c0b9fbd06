import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { assign, isMusterError, type PlacementInput } from '../../src/index.js';
import { countLoads, inputArb, partitionIds, shuffled, sortedEntries } from './helpers.js';

const RUNS = 300;

/** Checks every invariant of one result against its input; throws with a reason on violation. */
function checkInvariants(input: PlacementInput): void {
  const result = assign(input);
  const ids = partitionIds(input);
  const states = new Map(input.instances.map((i) => [i.id, i.state ?? 'active']));
  const active = input.instances.filter((i) => (i.state ?? 'active') === 'active');
  const pins: ReadonlyMap<string, string> =
    input.pins instanceof Map
      ? (input.pins as ReadonlyMap<string, string>)
      : new Map(Object.entries(input.pins ?? {}));

  if (active.length === 0) {
    assert.equal(result.assignments.size, 0);
    assert.deepEqual([...result.unassigned].sort(), [...ids].sort());
    assert.equal(result.ignoredPins.length, pins.size, 'every pin is reported when nothing is active');
    return;
  }
  // Every partition exactly once, and only to active instances.
  assert.equal(result.unassigned.length, 0);
  assert.equal(result.assignments.size, ids.length);
  for (const p of ids) {
    const to = result.assignments.get(p);
    assert.ok(to !== undefined, `partition ${p} unassigned`);
    assert.equal(states.get(to), 'active', `partition ${p} on non-active ${to}`);
  }
  // Pins: honoured when possible, otherwise reported with the right reason.
  const idSet = new Set(ids);
  const ignored = new Map(result.ignoredPins.map((x) => [x.partition, x.reason]));
  let pinned = 0;
  for (const [p, to] of pins) {
    const expected = !idSet.has(p)
      ? 'unknown-partition'
      : !states.has(to)
        ? 'instance-absent'
        : states.get(to) === 'draining'
          ? 'instance-draining'
          : undefined;
    assert.equal(ignored.get(p), expected, `pin ${p} → ${to}`);
    if (expected === undefined) {
      assert.equal(result.assignments.get(p), to);
      pinned++;
    }
  }
  assert.equal(result.stats.pinned, pinned);
  // Cap: never exceeded, except by an instance's own pins.
  const loads = countLoads(result.assignments);
  const pinLoads = new Map<string, number>();
  for (const [p, to] of pins) if (ignored.get(p) === undefined) pinLoads.set(to, (pinLoads.get(to) ?? 0) + 1);
  const eps = input.settings?.epsilon ?? 0.1;
  const total = active.reduce((s, i) => s + (i.weight ?? 1), 0);
  for (const inst of active) {
    const cap = result.caps.get(inst.id)!;
    const exact = ((1 + eps) * ids.length * (inst.weight ?? 1)) / total;
    const bound = Math.min(ids.length, exact);
    assert.ok(cap >= bound - 1e-6 && cap < bound + 1 + 1e-6, `cap ${cap} for ${exact}`);
    const load = loads.get(inst.id) ?? 0;
    assert.equal(result.loads.get(inst.id), load);
    assert.ok(load <= Math.max(cap, pinLoads.get(inst.id) ?? 0), `${inst.id} has ${load} > cap ${cap}`);
  }
  assert.equal(result.stats.overCap, 0);
  const s = result.stats;
  assert.equal(s.pinned + s.firstChoice + s.kept + s.overflowed, ids.length);
}

void describe('assign: properties over random inputs', () => {
  void test('deterministic under shuffling of every input list', () => {
    fc.assert(
      fc.property(inputArb, fc.nat(), (input, seed) => {
        const a = assign(input);
        const b = assign(shuffled(input, seed));
        assert.deepEqual(sortedEntries(b), sortedEntries(a));
        assert.deepEqual([...b.loads], [...a.loads]);
        assert.deepEqual(b.ignoredPins, a.ignoredPins);
        assert.deepEqual([...b.unassigned].sort(), [...a.unassigned].sort());
      }),
      { numRuns: RUNS },
    );
  });

  void test('every partition assigned once, nothing to draining instances, pins honoured, cap never exceeded', () => {
    fc.assert(fc.property(inputArb, checkInvariants), { numRuns: RUNS });
  });

  void test('the result is a fixed point: feeding it back as current owners changes nothing', () => {
    fc.assert(
      fc.property(inputArb, (input) => {
        const first = assign(input);
        const again = assign({ ...input, currentOwners: first.assignments });
        assert.deepEqual(sortedEntries(again), sortedEntries(first));
      }),
      { numRuns: RUNS },
    );
  });

  void test('stable under an acquisition as assigned: an unowned partition owned by its assignee changes nothing', () => {
    let checked = 0;
    fc.assert(
      fc.property(inputArb, fc.nat(), (input, pick) => {
        const first = assign(input);
        if (first.stats.overCap !== 0) return;
        const owners = new Map(
          input.currentOwners instanceof Map ? (input.currentOwners as ReadonlyMap<string, string>) : [],
        );
        const unowned = [...first.assignments].filter(([p]) => !owners.has(p));
        if (unowned.length === 0) return;
        const [p, to] = unowned[pick % unowned.length]!;
        owners.set(p, to);
        const again = assign({ ...input, currentOwners: owners });
        assert.deepEqual(sortedEntries(again), sortedEntries(first));
        checked++;
      }),
      { numRuns: RUNS * 3 },
    );
    assert.ok(checked > RUNS / 2, `only ${checked} inputs had an unowned partition`);
  });

  void test('the seed changes the assignment', () => {
    const instances = Array.from({ length: 10 }, (_, i) => ({ id: `i${i}` }));
    const a = assign({ partitions: 1000, instances, settings: { seed: 1 } }).assignments;
    const b = assign({ partitions: 1000, instances, settings: { seed: 2 } }).assignments;
    const same = [...a].filter(([p, to]) => b.get(p) === to).length;
    assert.ok(same < 200, `${same} of 1000 unchanged`);
  });
});

void describe('assign: balance', () => {
  void test('16 partitions on 5 instances: nobody gets more than 4', () => {
    for (let seed = 0; seed < 200; seed++) {
      const r = assign({
        partitions: 16,
        instances: ['a', 'b', 'c', 'd', 'e'].map((id) => ({ id })),
        settings: { seed },
      });
      assert.ok(Math.max(...r.loads.values()) <= 4, `seed ${seed}: ${JSON.stringify([...r.loads])}`);
    }
  });

  void test('max / mean ≤ 1 + ε when the share is large enough for the ceiling not to matter', () => {
    for (const [P, N] of [
      [1000, 10],
      [5000, 50],
      [2000, 3],
    ] as const) {
      const r = assign({ partitions: P, instances: Array.from({ length: N }, (_, i) => ({ id: `n${i}` })) });
      const max = Math.max(...r.loads.values());
      assert.ok(max / (P / N) <= 1.1 + 1e-9, `${P}×${N}: max ${max}`);
    }
  });

  void test('weights: loads follow weights within the cap, ε = 0 gives exact shares', () => {
    const instances = [
      { id: 'small', weight: 1 },
      { id: 'medium', weight: 2 },
      { id: 'large', weight: 5 },
    ];
    const r = assign({ partitions: 8000, instances });
    assert.ok(r.loads.get('large')! <= 5500 && r.loads.get('large')! >= 4500);
    assert.ok(r.loads.get('small')! <= 1100 && r.loads.get('small')! >= 800);
    const exact = assign({ partitions: 8000, instances, settings: { epsilon: 0 } });
    assert.deepEqual(
      [...exact.loads],
      [
        ['large', 5000],
        ['medium', 2000],
        ['small', 1000],
      ],
    );
  });
});

void describe('assign: reported conditions', () => {
  void test('no instances: everything unassigned, nothing thrown', () => {
    const r = assign({ partitions: ['x', 'y'], instances: [], pins: { x: 'gone' } });
    assert.equal(r.assignments.size, 0);
    assert.deepEqual(r.unassigned, ['x', 'y']);
    assert.deepEqual(r.ignoredPins, [{ partition: 'x', instance: 'gone', reason: 'instance-absent' }]);
    const drained = assign({ partitions: 3, instances: [{ id: 'a', state: 'draining' }] });
    assert.deepEqual(drained.unassigned, ['0', '1', '2']);
  });

  void test('pins beyond the cap are honoured and crowd the instance out of everything else', () => {
    const pins = Object.fromEntries(Array.from({ length: 40 }, (_, i) => [String(i), 'a']));
    const r = assign({
      partitions: 100,
      instances: [{ id: 'a' }, { id: 'b' }, { id: 'c' }, { id: 'd' }],
      pins,
    });
    assert.equal(r.loads.get('a'), 40);
    for (let i = 0; i < 40; i++) assert.equal(r.assignments.get(String(i)), 'a');
  });

  void test('a draining owner loses its partitions; a draining pin is ignored and reported', () => {
    const before = assign({ partitions: 50, instances: [{ id: 'a' }, { id: 'b' }] });
    const after = assign({
      partitions: 50,
      instances: [{ id: 'a', state: 'draining' }, { id: 'b' }],
      currentOwners: before.assignments,
      pins: { '3': 'a' },
    });
    assert.equal(after.loads.get('b'), 50);
    assert.equal(after.loads.has('a'), false);
    assert.deepEqual(after.ignoredPins, [{ partition: '3', instance: 'a', reason: 'instance-draining' }]);
  });
});

void describe('assign: bad input', () => {
  const bad: [string, unknown][] = [
    ['duplicate partition ids', { partitions: ['a', 'b', 'a'], instances: [{ id: 'x' }] }],
    ['empty partition id', { partitions: [''], instances: [{ id: 'x' }] }],
    ['non-string partition id', { partitions: [1], instances: [{ id: 'x' }] }],
    ['negative partition count', { partitions: -1, instances: [] }],
    ['fractional partition count', { partitions: 2.5, instances: [] }],
    ['duplicate instance ids', { partitions: 3, instances: [{ id: 'x' }, { id: 'y' }, { id: 'x' }] }],
    [
      'duplicate ids across states',
      { partitions: 3, instances: [{ id: 'x' }, { id: 'x', state: 'draining' }] },
    ],
    ['zero weight', { partitions: 3, instances: [{ id: 'x', weight: 0 }] }],
    ['negative weight', { partitions: 3, instances: [{ id: 'x', weight: -1 }] }],
    ['infinite weight', { partitions: 3, instances: [{ id: 'x', weight: Infinity }] }],
    ['NaN weight', { partitions: 3, instances: [{ id: 'x', weight: NaN }] }],
    ['unknown state', { partitions: 3, instances: [{ id: 'x', state: 'sleeping' }] }],
    ['negative epsilon', { partitions: 3, instances: [{ id: 'x' }], settings: { epsilon: -0.1 } }],
    ['NaN epsilon', { partitions: 3, instances: [{ id: 'x' }], settings: { epsilon: NaN } }],
    ['fractional seed', { partitions: 3, instances: [{ id: 'x' }], settings: { seed: 0.5 } }],
    ['non-string pin', { partitions: 3, instances: [{ id: 'x' }], pins: { '1': 7 } }],
    ['non-string owner', { partitions: 3, instances: [{ id: 'x' }], currentOwners: new Map([['1', 7]]) }],
    ['not an object', 42],
  ];
  for (const [name, input] of bad) {
    void test(`${name} → MUSTER_INVALID_ARGUMENT`, () => {
      assert.throws(
        () => assign(input as PlacementInput),
        (e) => isMusterError(e, 'MUSTER_INVALID_ARGUMENT') && e.message.length > 10,
      );
    });
  }

  void test('fuzzed duplicate partition ids are always caught', () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.string({ minLength: 1 }), { minLength: 1, maxLength: 200 }),
        fc.nat(),
        (ids, k) => {
          const withDup = [...ids, ids[k % ids.length]!];
          assert.throws(
            () => assign({ partitions: withDup, instances: [{ id: 'x' }] }),
            (e) => isMusterError(e, 'MUSTER_INVALID_ARGUMENT'),
          );
        },
      ),
      { numRuns: 200 },
    );
  });
});
