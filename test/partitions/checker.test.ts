import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { checkConvergence, checkOwnership, type OwnershipEvent } from '../../src/testing/index.js';

function ev(
  type: 'acquire' | 'start' | 'work' | 'stop' | 'release',
  t: number,
  instance: string,
  partition: string,
  token: number,
): OwnershipEvent {
  return { type, t, instance, partition, token };
}

/** A clean hand-off of partition p from a (token 5) to b (token 9). */
function handOff(): OwnershipEvent[] {
  return [
    ev('acquire', 1, 'a', 'p', 5),
    ev('start', 2, 'a', 'p', 5),
    ev('work', 3, 'a', 'p', 5),
    ev('stop', 10, 'a', 'p', 5),
    ev('release', 11, 'a', 'p', 5),
    ev('acquire', 12, 'b', 'p', 9),
    ev('start', 13, 'b', 'p', 9),
    ev('work', 14, 'b', 'p', 9),
  ];
}

describe('ownership checker', () => {
  test('accepts a clean hand-off and converges', () => {
    const r = checkOwnership(handOff());
    assert.deepEqual(r.violations, []);
    assert.equal(r.transitions, 2);
    assert.deepEqual(checkConvergence(r, { partitions: ['p'], live: ['a', 'b'] }), []);
  });

  test('work stopped and started again under one ownership is accepted; a second start without a stop is not', () => {
    // An agent stops its child when a renewal is late and starts it again under the same token when
    // the renewal arrives in time: two incarnations of one ownership.
    const restarted: OwnershipEvent[] = [
      ev('start', 1, 'a', 'p', 5),
      ev('work', 2, 'a', 'p', 5),
      ev('stop', 3, 'a', 'p', 5),
      ev('start', 4, 'a', 'p', 5),
      ev('work', 5, 'a', 'p', 5),
    ];
    const r = checkOwnership(restarted);
    assert.deepEqual(r.violations, []);
    assert.equal(r.transitions, 1);
    assert.deepEqual(checkConvergence(r, { partitions: ['p'], live: ['a'] }), []);
    // work between the incarnations is outside the ownership
    const between = checkOwnership([...restarted, ev('work', 3.5, 'a', 'p', 5)]);
    assert.deepEqual(
      between.violations.map((v) => v.kind),
      ['work-outside-ownership'],
    );
    // two starts with no stop between them: two children at once
    const twice = checkOwnership(restarted.filter((e) => e.type !== 'stop'));
    assert.deepEqual(
      twice.violations.map((v) => v.kind),
      ['malformed'],
    );
    // another instance under the same token is still a reused token
    const other = checkOwnership([...restarted.slice(0, 3), ev('start', 4, 'b', 'p', 5)]);
    assert.ok(other.violations.some((v) => v.kind === 'token-reused'));
  });

  test('catches overlapping owners', () => {
    const h = handOff().map((e) => (e.type === 'stop' ? { ...e, t: 13.5 } : e));
    const r = checkOwnership(h);
    assert.equal(r.ok, false);
    assert.deepEqual(
      r.violations.map((v) => v.kind),
      ['overlap'],
    );
  });

  test('catches an overlap hidden behind a short ownership (non-adjacent intervals)', () => {
    const h: OwnershipEvent[] = [
      ev('start', 0, 'a', 'p', 1),
      ev('start', 1, 'b', 'p', 2),
      ev('stop', 2, 'b', 'p', 2),
      ev('start', 3, 'c', 'p', 3),
      ev('stop', 100, 'a', 'p', 1),
    ];
    const kinds = checkOwnership(h).violations.map((v) => v.kind);
    assert.deepEqual(kinds, ['overlap', 'overlap']);
  });

  test('an owner that never stops overlaps with the next one', () => {
    const h = handOff().filter((e) => e.type !== 'stop');
    assert.deepEqual(
      checkOwnership(h).violations.map((v) => v.kind),
      ['overlap'],
    );
  });

  test('a crash ends every open ownership of the instance', () => {
    const h = [
      ...handOff().filter((e) => e.type !== 'stop'),
      { type: 'crash', t: 11.5, instance: 'a' } as const,
    ];
    const r = checkOwnership(h);
    assert.deepEqual(r.violations, []);
  });

  test('catches a token going backwards', () => {
    const h = handOff().map((e) => (e.instance === 'b' && 'token' in e ? { ...e, token: 4 } : e));
    assert.deepEqual(
      checkOwnership(h).violations.map((v) => v.kind),
      ['token-order'],
    );
  });

  test('catches a token used twice', () => {
    const h = handOff().map((e) => (e.instance === 'b' && 'token' in e ? { ...e, token: 5 } : e));
    assert.deepEqual(
      checkOwnership(h).violations.map((v) => v.kind),
      ['token-reused'],
    );
  });

  test('validUntil ends a zombie ownership at its deadline; work after it is caught', () => {
    // a was frozen (SIGSTOP) from 5 to 30; its deadline was 8; b started at 13; a noticed at 30.
    const h = handOff().map((e) => (e.type === 'stop' ? { ...e, t: 30, validUntil: 8 } : e));
    assert.deepEqual(checkOwnership(h).violations, []);
    const zombieWork = [...h, ev('work', 29, 'a', 'p', 5)];
    assert.deepEqual(
      checkOwnership(zombieWork).violations.map((v) => v.kind),
      ['work-outside-ownership'],
    );
  });

  test('catches work before start and events without a start', () => {
    const h = [...handOff(), ev('work', 12.5, 'b', 'p', 9), ev('stop', 40, 'c', 'p', 77)];
    assert.deepEqual(
      checkOwnership(h)
        .violations.map((v) => v.kind)
        .sort(),
      ['malformed', 'work-outside-ownership'],
    );
  });

  test('catches non-convergence: unowned, two owners, a dead owner', () => {
    const h: OwnershipEvent[] = [
      ev('start', 1, 'a', 'p', 1),
      ev('start', 1, 'a', 'q', 2),
      ev('start', 2, 'b', 'q', 3),
      ev('start', 1, 'z', 'r', 4),
    ];
    const r = checkOwnership(h);
    const kinds = checkConvergence(r, { partitions: ['p', 'q', 'r', 's'], live: ['a', 'b'] }).map(
      (v) => v.kind,
    );
    assert.deepEqual(kinds, ['multiple-owners', 'dead-owner', 'unowned']);
  });
});
