/**
 * The hold queue alone, on a manual clock: deadlines survive a failed release, and a route change
 * moves each held request by its own key.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ManualClock } from '../../src/clock.js';
import type { HoldSettings } from '../../src/proxy/config.js';
import { type Held, HoldQueues } from '../../src/proxy/hold.js';
import type { Resolution } from '../../src/proxy/table.js';

const SETTINGS: HoldSettings = {
  timeoutMs: 500,
  releaseRate: 1000,
  maxPerDestination: 100,
  maxTotal: 100,
  probeIntervalMs: 250,
  timeoutStatus: 504,
  timeoutBody: undefined,
  retryAfterSeconds: 1,
};

interface Item extends Held {
  readonly id: string;
}

/** A table of key → destination; a destination in `up` resolves to an origin of its own name. */
function harness(routes: Map<string, string>, up: Set<string>) {
  const clock = new ManualClock();
  const released: string[] = [];
  const expired: string[] = [];
  const queues = new HoldQueues<Item>(SETTINGS, clock, {
    resolve(key): Resolution {
      const destination = routes.get(key) ?? 'spec';
      return up.has(destination)
        ? {
            ok: true,
            destination,
            origin: `http://${destination}`,
            via: 'partition',
            instance: destination,
            partition: destination,
            token: 1,
            addressFrom: 'owner-endpoint',
          }
        : {
            ok: false,
            destination,
            via: 'partition',
            reason: 'no-owner',
            instance: undefined,
            partition: undefined,
            token: undefined,
          };
    },
    release: (item) => released.push(item.id),
    expire: (item) => expired.push(item.id),
  });
  const hold = (id: string, key: string): Item => {
    const item: Item = { id, key, destination: routes.get(key) ?? 'spec', heldAt: clock.monotonic() };
    assert.equal(queues.add(item), 'held');
    return item;
  };
  return { clock, queues, released, expired, hold };
}

describe('proxy hold queue', () => {
  test('keeps no state for a backend once its release budget refilled and its down mark passed', () => {
    const routes = new Map([
      ['k', 'p0'],
      ['j', 'p1'],
    ]);
    const up = new Set(['p0', 'p1']);
    const h = harness(routes, up);
    h.queues.markDown('http://p0');
    h.hold('a', 'k');
    h.queues.markDown('http://gone');
    assert.deepEqual(h.queues.tracked, ['http://gone', 'http://p0'], 'two down marks');
    h.clock.advance(SETTINGS.probeIntervalMs); // both marks end; the pump they armed releases 'a'
    assert.deepEqual(h.released, ['a']);
    assert.deepEqual(h.queues.tracked, ['http://p0'], "p0's budget is being spent; the marks are gone");
    h.clock.advance(1000); // p0's budget refills: the next pump forgets it
    h.hold('b', 'j');
    h.clock.advance(1);
    assert.deepEqual(h.released, ['a', 'b']);
    assert.deepEqual(h.queues.tracked, ['http://p1'], 'p0, no longer used, left no entry');
  });

  test('a request released, failing again after its deadline passed while it was out, expires', () => {
    const routes = new Map([['k', 'p0']]);
    const up = new Set<string>();
    const h = harness(routes, up);
    const item = h.hold('a', 'k');
    h.clock.advance(100);
    up.add('p0');
    h.queues.poke();
    h.clock.advance(1);
    assert.deepEqual(h.released, ['a']);
    // out being tried (a backend that takes its time, then fails) while the deadline passes
    h.clock.advance(600);
    assert.deepEqual(h.expired, []);
    up.delete('p0');
    assert.equal(h.queues.add(item, true), 'held');
    h.clock.advance(1);
    assert.deepEqual(h.expired, ['a'], 'the deadline it kept is over: it expires at once');
    assert.equal(h.queues.size, 0);
  });

  test('a request that fails again before its deadline keeps that deadline', () => {
    const routes = new Map([['k', 'p0']]);
    const up = new Set<string>(['p0']);
    const h = harness(routes, up);
    up.delete('p0');
    const item = h.hold('a', 'k');
    up.add('p0');
    h.queues.poke();
    h.clock.advance(1);
    up.delete('p0');
    h.queues.add(item, true);
    h.clock.advance(400);
    assert.deepEqual(h.expired, []);
    h.clock.advance(100);
    assert.deepEqual(h.expired, ['a']);
  });

  test('a route change moves each held request by its own key, not by the first one', () => {
    // no spec yet: every key waits under `spec`
    const routes = new Map<string, string>();
    const up = new Set<string>();
    const h = harness(routes, up);
    h.hold('a', 'k0');
    h.hold('b', 'k1');
    h.hold('c', 'k0');
    assert.deepEqual(h.queues.sizes(), { spec: 3 });
    // the spec arrives: k0 → p0 (no owner yet), k1 → p1 (owned)
    routes.set('k0', 'p0').set('k1', 'p1');
    up.add('p1');
    h.queues.poke();
    h.clock.advance(1);
    assert.deepEqual(h.released, ['b'], "k1's request goes to its owner");
    assert.deepEqual(h.queues.sizes(), { p0: 2 });
    assert.deepEqual(h.expired, []);
  });

  test('requests that fail again keep their order by the time they were first held', () => {
    const routes = new Map([['k', 'p0']]);
    const up = new Set<string>();
    const h = harness(routes, up);
    const items = ['a', 'b', 'c'].map((id) => {
      const item = h.hold(id, 'k');
      h.clock.advance(1);
      return item;
    });
    up.add('p0');
    h.queues.poke();
    h.clock.advance(1);
    assert.deepEqual(h.released, ['a', 'b', 'c']);
    up.delete('p0');
    for (const item of items) h.queues.add(item, true);
    up.add('p0');
    h.queues.poke();
    h.clock.advance(1);
    assert.deepEqual(h.released.slice(3), ['a', 'b', 'c']);
  });
});
