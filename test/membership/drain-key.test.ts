/**
 * An operator's drain (`muster drain`: a `drain/<id>` key) reaches discovery: membership's watched
 * view reports the active instance as `draining`, so the balancer (and the bus's calls) stop picking
 * it; deleting the key brings it back. Before, only the partitions view read drain keys and the bus
 * kept sending new calls to a drained instance.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { flushMicrotasks, ManualClock } from '../../src/clock.js';
import {
  Balancer,
  type InstanceChange,
  type InstanceView,
  join,
  type Member,
  serviceKeys,
  watchInstances,
} from '../../src/membership/index.js';
import { drainInstance, undrainInstance } from '../../src/proxy/index.js';
import { MemoryStore } from '../../src/store/index.js';
import { FaultyStore } from '../../src/testing/index.js';

async function fleet(): Promise<{ clock: ManualClock; mem: MemoryStore; members: Member[] }> {
  const clock = new ManualClock();
  const mem = new MemoryStore({ clock });
  const members = [];
  for (const id of ['a', 'b']) {
    members.push(
      await join(mem, { service: 'api', id, address: `127.0.0.1:${id === 'a' ? 1001 : 1002}`, clock }),
    );
  }
  return { clock, mem, members };
}

/** Waits for the view's updates (bounded, real time) until `predicate` holds. */
async function until(view: InstanceView, predicate: () => boolean, what: string): Promise<void> {
  await view.ready;
  if (predicate()) return;
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`${what}: not seen within 2 s`));
    }, 2000);
    const off = view.on('update', () => {
      if (!predicate()) return;
      clearTimeout(timer);
      off();
      resolve();
    });
  });
}

function picks(lb: Balancer, n: number): string[] {
  return [...new Set(Array.from({ length: n }, () => lb.pick().id))].sort();
}

const describeChange = (ch: InstanceChange): string =>
  ch.type === 'changed'
    ? `changed:${ch.instance.id}:${ch.previous.state}->${ch.instance.state}`
    : `${ch.type}:${ch.instance.id}:${ch.instance.state}`;

describe('drain keys in membership views', () => {
  test('a drain key makes an active instance draining for discovery; deleting it makes it active again', async () => {
    const { mem, clock, members } = await fleet();
    const view = watchInstances(mem, 'api', { clock });
    await view.ready;
    const lb = new Balancer(view);
    assert.deepEqual(picks(lb, 4), ['a', 'b']);
    const changes: string[] = [];
    view.on('update', (u) => changes.push(...u.changes.map(describeChange)));

    await drainInstance(mem, 'api', 'a');
    await until(view, () => view.get('a')?.state === 'draining', 'a draining');
    assert.deepEqual(picks(lb, 4), ['b'], 'discovery no longer picks the drained instance');
    assert.deepEqual(changes, ['changed:a:active->draining']);
    assert.equal(view.size, 2, 'the drained instance is still listed');

    // The instance rewriting its own record does not end the operator's drain.
    await members[0]?.update({ weight: 3 });
    await until(view, () => view.get('a')?.weight === 3, 'a reweighted');
    assert.equal(view.get('a')?.state, 'draining');
    assert.deepEqual(picks(lb, 4), ['b']);

    await undrainInstance(mem, 'api', 'a');
    await until(view, () => view.get('a')?.state === 'active', 'a active again');
    assert.deepEqual(picks(lb, 8), ['a', 'b'], 'picked again');
    assert.equal(changes.at(-1), 'changed:a:draining->active');

    // A view opened while the key exists starts with the instance draining.
    await drainInstance(mem, 'api', 'b');
    const late = watchInstances(mem, 'api', { clock });
    await late.ready;
    assert.equal(late.get('b')?.state, 'draining');
    assert.deepEqual(
      late.instances().map((i) => i.state),
      ['active', 'draining'],
    );
    late.close();
    view.close();
    for (const m of members) await m.leave();
  });

  test('a drain key for an unknown id is harmless', async () => {
    const { mem, clock, members } = await fleet();
    const view = watchInstances(mem, 'api', { clock });
    await view.ready;
    let updates = 0;
    view.on('update', () => updates++);
    await mem.put(serviceKeys(undefined, 'api').drain('ghost'), JSON.stringify({ instance: 'ghost' }));
    await mem.put(serviceKeys(undefined, 'api').drain('x/y'), 'not json');
    // A later write to a known record shows the view has seen both drain events.
    await members[1]?.update({ weight: 2 });
    await until(view, () => view.get('b')?.weight === 2, 'b reweighted');
    assert.equal(updates, 1, 'only the record write was an update');
    assert.deepEqual(
      view.instances().map((i) => `${i.id}:${i.state}`),
      ['a:active', 'b:active'],
    );
    assert.deepEqual(picks(new Balancer(view), 4), ['a', 'b']);
    view.close();
    for (const m of members) await m.leave();
  });

  test('a drain key written or deleted while the watch is broken is seen after the re-list', async () => {
    const { mem, clock, members } = await fleet();
    const store = new FaultyStore(mem, { clock });
    const view = watchInstances(store, 'api', { clock });
    await view.ready;
    const lb = new Balancer(view);
    const resyncs: string[][] = [];
    view.on('update', (u) => {
      if (u.resync) resyncs.push(u.changes.map(describeChange));
    });

    store.breakWatches();
    await flushMicrotasks();
    await drainInstance(mem, 'api', 'a');
    await mem.compact(mem.revision);
    await clock.tick(100, 10); // the re-list back-off
    await until(view, () => view.get('a')?.state === 'draining', 'a draining after the re-list');
    assert.deepEqual(picks(lb, 4), ['b']);
    assert.deepEqual(resyncs.flat(), ['changed:a:active->draining']);

    store.breakWatches();
    await flushMicrotasks();
    await undrainInstance(mem, 'api', 'a');
    await mem.compact(mem.revision);
    await clock.tick(2000, 10);
    await until(view, () => view.get('a')?.state === 'active', 'a active after the re-list');
    assert.deepEqual(picks(lb, 8), ['a', 'b']);
    assert.ok(resyncs.flat().includes('changed:a:draining->active'));
    view.close();
    for (const m of members) await m.leave();
  });
});
