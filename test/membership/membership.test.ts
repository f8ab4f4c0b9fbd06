import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { flushMicrotasks, ManualClock } from '../../src/clock.js';
import { isMusterError, MusterError } from '../../src/errors.js';
import {
  type Instance,
  type InstanceView,
  type InstancesUpdate,
  isHealthy,
  join,
  openSession,
  serviceKeys,
  watchInstances,
} from '../../src/membership/index.js';
import { jsonOf, MemoryStore } from '../../src/store/index.js';
import { FaultyStore } from '../../src/testing/index.js';

function setup(): { clock: ManualClock; mem: MemoryStore; store: FaultyStore } {
  const clock = new ManualClock();
  const mem = new MemoryStore({ clock });
  return { clock, mem, store: new FaultyStore(mem, { clock }) };
}

/** Waits (bounded, real time) until the view satisfies `predicate`. */
async function until(
  view: InstanceView,
  predicate: (instances: readonly Instance[]) => boolean,
  what: string,
): Promise<void> {
  await view.ready;
  if (predicate(view.instances())) return;
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(
        new Error(
          `${what}: not seen within 2 s; view has ${view
            .instances()
            .map((i) => i.id)
            .join(', ')}`,
        ),
      );
    }, 2000);
    const off = view.on('update', () => {
      if (!predicate(view.instances())) return;
      clearTimeout(timer);
      off();
      resolve();
    });
  });
}

const ids = (v: InstanceView): string[] => v.instances().map((i) => i.id);

describe('membership (memory engine)', () => {
  test('join writes the leased record; watchers see it join, change and leave at once', async () => {
    const { clock, mem } = setup();
    const view = watchInstances(mem, 'api', { clock });
    const updates: InstancesUpdate[] = [];
    const iterating = (async () => {
      for await (const u of view) updates.push(u);
    })();
    await view.ready;
    const m = await join(mem, {
      service: 'api',
      id: 'a1',
      address: '127.0.0.1:8080',
      weight: 2,
      tags: ['blue'],
      clock,
    });
    const kv = await mem.get(serviceKeys(undefined, 'api').instance('a1'));
    assert.ok(kv);
    assert.equal(kv.lease, m.session.leaseId);
    assert.deepEqual(jsonOf(kv.value), {
      id: 'a1',
      address: '127.0.0.1:8080',
      weight: 2,
      state: 'active',
      health: 'passing',
      tags: ['blue'],
      startedAt: new Date(clock.now()).toISOString(),
    });
    await until(view, (is) => is.length === 1, 'joined');
    assert.equal(view.get('a1')?.address, '127.0.0.1:8080');
    assert.ok(isHealthy(view.get('a1') as Instance));

    await m.drain();
    await until(view, (is) => is[0]?.state === 'draining', 'draining');
    assert.equal(isHealthy(view.get('a1') as Instance), false);

    await m.leave();
    await m.leave(); // idempotent
    await until(view, (is) => is.length === 0, 'left');
    assert.equal(m.state, 'left');
    assert.deepEqual(mem.leaseIds(), [], 'the member closed the session it opened');
    await assert.rejects(m.update({ weight: 3 }), (err) => isMusterError(err, 'MUSTER_CLOSED'));
    view.close();
    await iterating;
    const changes = updates.flatMap((u) => u.changes.map((c) => `${c.type}:${c.instance.id}`));
    assert.deepEqual(changes, ['joined:a1', 'changed:a1', 'left:a1']);
    assert.equal(updates[0]?.resync, true, 'an iterator starts with the snapshot');
  });

  test('a second live instance with the same id fails with MUSTER_DUPLICATE_INSTANCE and never steals', async () => {
    const { clock, mem } = setup();
    const first = await join(mem, { service: 'api', id: 'x', address: 'h1:1', clock });
    const before = await mem.get(first.key);
    await assert.rejects(join(mem, { service: 'api', id: 'x', address: 'h2:2', clock }), (err) => {
      assert.ok(isMusterError(err, 'MUSTER_DUPLICATE_INSTANCE'));
      assert.equal(err.details.lease, first.session.leaseId);
      return true;
    });
    assert.deepEqual(await mem.get(first.key), before, 'the live record is untouched');
    assert.deepEqual(mem.leaseIds(), [first.session.leaseId], 'the failed join released its session');
    // Same session, same id: still a duplicate.
    await assert.rejects(join(mem, { service: 'api', id: 'x', session: first.session }), (err) =>
      isMusterError(err, 'MUSTER_DUPLICATE_INSTANCE'),
    );
    await first.leave();
    const again = await join(mem, { service: 'api', id: 'x', clock });
    await again.leave();
  });

  test('bad input is refused with MUSTER_INVALID_ARGUMENT and changes nothing', async () => {
    const { clock, mem } = setup();
    const rev = mem.revision;
    const bad: [string, Parameters<typeof join>[1]][] = [
      ['empty service', { service: '' }],
      ['service with a slash', { service: 'a/b' }],
      ['service with a space', { service: ' api' }],
      ['id with a slash', { service: 'api', id: 'a/b' }],
      ['empty id', { service: 'api', id: '' }],
      ['address without port', { service: 'api', address: 'localhost' }],
      ['port 0', { service: 'api', address: 'localhost:0' }],
      ['port too large', { service: 'api', address: 'localhost:70000' }],
      ['port not a number', { service: 'api', address: 'localhost:http' }],
      ['IPv6 without brackets', { service: 'api', address: '::1:80' }],
      ['host with a space', { service: 'api', address: 'my host:80' }],
      ['URL without host', { service: 'api', address: 'http://' }],
      ['negative weight', { service: 'api', weight: -1 }],
      ['NaN weight', { service: 'api', weight: Number.NaN }],
      ['unknown state', { service: 'api', state: 'sleeping' as 'active' }],
      ['tags not an array', { service: 'api', tags: 'a' as unknown as string[] }],
      ['TTL 0', { service: 'api', ttl: 0 }],
    ];
    for (const [what, options] of bad) {
      await assert.rejects(
        join(mem, { clock, ...options }),
        (err) => isMusterError(err, 'MUSTER_INVALID_ARGUMENT'),
        what,
      );
    }
    assert.equal(mem.revision, rev);
    assert.deepEqual(mem.leaseIds(), []);
    for (const address of [
      '127.0.0.1:8080',
      '[::1]:80',
      'api-1.example.com:443',
      'http://x:1/path',
      'h:65535',
    ]) {
      const m = await join(mem, { service: 'api', address, clock });
      await m.leave();
    }
  });

  test('ids default to host-pid-random and are unique', async () => {
    const { clock, mem } = setup();
    const a = await join(mem, { service: 'api', clock });
    const b = await join(mem, { service: 'api', clock });
    assert.match(a.id, new RegExp(`^[A-Za-z0-9_-]+-${process.pid}-[0-9a-f]{4}$`));
    assert.notEqual(a.id, b.id);
    await Promise.all([a.leave(), b.leave()]);
  });

  test('a crashed instance (keep-alives stop) disappears from watchers when its lease expires', async () => {
    const { clock, mem, store } = setup();
    const view = watchInstances(mem, 'api', { clock });
    const session = await openSession(store, { ttl: '3s', clock });
    const m = await join(store, { service: 'api', id: 'c1', session, clock });
    await until(view, (is) => is.length === 1, 'joined');
    store.blackholeKeepAlives = true;
    let lostAt: number | undefined;
    session.on('lost', () => (lostAt = clock.monotonic()));
    let goneAt: number | undefined;
    view.on('update', (u) => {
      if (u.changes.some((c) => c.type === 'left')) goneAt = clock.monotonic();
    });
    const t0 = clock.monotonic();
    while (goneAt === undefined && clock.monotonic() - t0 < 10_000) await clock.tick(10);
    assert.ok(lostAt !== undefined && goneAt !== undefined);
    assert.ok(lostAt < goneAt, 'the instance knows before anyone else');
    assert.ok(goneAt - t0 <= 3000 + 10, `gone ${goneAt - t0} ms after the last keep-alive (TTL 3 s)`);
    assert.equal(m.state, 'lost');
    await assert.rejects(m.drain(), (err) => isMusterError(err, 'MUSTER_SESSION_LOST'));
    await m.leave();
    view.close();
  });

  test('a member on a shared session: leave deletes only its record and keeps the session', async () => {
    const { clock, mem } = setup();
    const session = await openSession(mem, { clock });
    const a = await join(mem, { service: 'api', id: 'a', session });
    const b = await join(mem, { service: 'web', id: 'b', session });
    await a.leave();
    assert.equal(await mem.get(a.key), undefined);
    assert.ok(await mem.get(b.key));
    assert.equal(session.state, 'active');
    await session.close();
    assert.equal(await mem.get(b.key), undefined, 'closing the session removes the rest at once');
  });

  for (const [what, error] of [
    ['a dropped connection', new MusterError('MUSTER_UNAVAILABLE', 'connection reset')],
    [
      'a compaction',
      new MusterError('MUSTER_COMPACTED', 'revision compacted', { details: { compactRevision: 10 } }),
    ],
  ] as const) {
    test(`after ${what} the view re-lists and reports the difference as changes`, async () => {
      const { clock, mem, store } = setup();
      const a = await join(mem, { service: 'api', id: 'a', clock });
      const b = await join(mem, { service: 'api', id: 'b', clock });
      const view = watchInstances(store, 'api', { clock });
      await until(view, (is) => is.length === 2, 'listed');
      const updates: InstancesUpdate[] = [];
      view.on('update', (u) => updates.push(u));
      const errors: unknown[] = [];
      view.on('error', (e) => errors.push(e));
      store.breakWatches(error);
      await flushMicrotasks();
      // While the view is disconnected: a leaves, b drains, c joins; history is compacted.
      await a.leave();
      await b.drain();
      const c = await join(mem, { service: 'api', id: 'c', clock });
      await mem.compact(mem.revision);
      await clock.tick(100, 10); // the re-list back-off
      await until(view, (is) => is.map((i) => i.id).join() === 'b,c', 'resynced');
      // Both of the view's watches (the records and the drain keys) failed and re-listed.
      assert.equal(errors.length, 2);
      assert.equal(view.resyncs, 2);
      const resyncs = updates.filter((u) => u.resync);
      assert.ok(resyncs.length > 0);
      const changes = resyncs.flatMap((u) => u.changes);
      assert.deepEqual(changes.map((ch) => `${ch.type}:${ch.instance.id}`).sort(), [
        'changed:b',
        'joined:c',
        'left:a',
      ]);
      assert.equal(view.get('b')?.state, 'draining');
      // And the new watch works.
      await c.leave();
      await until(view, (is) => is.length === 1, 'c left after resync');
      assert.deepEqual(ids(view), ['b']);
      await b.leave();
      view.close();
    });
  }

  test('every iterator starts with the current snapshot; closing ends them; a closed store fails them', async () => {
    const { clock, mem } = setup();
    const m = await join(mem, { service: 'api', id: 'a', clock });
    const view = watchInstances(mem, 'api', { clock });
    await view.ready;
    for (let i = 0; i < 2; i++) {
      for await (const u of view) {
        assert.equal(u.resync, true);
        assert.deepEqual(
          u.instances.map((x) => x.id),
          ['a'],
        );
        break;
      }
    }
    const view2 = watchInstances(mem, 'api', { clock });
    await view2.ready;
    const draining = (async () => {
      const seen: string[] = [];
      for await (const u of view2) seen.push(...u.instances.map((x) => x.id));
      return seen;
    })();
    await m.leave();
    await mem.close();
    await assert.rejects(draining, (err) => isMusterError(err, 'MUSTER_CLOSED'));
    view.close();
    await view[Symbol.asyncDispose]();
  });

  test('records that are not muster instance records are ignored', async () => {
    const { clock, mem } = setup();
    const keys = serviceKeys(undefined, 'api');
    await mem.put(keys.instance('junk'), 'not json');
    await mem.put(keys.instance('other'), JSON.stringify({ id: 'mismatch' }));
    const view = watchInstances(mem, 'api', { clock });
    await view.ready;
    assert.deepEqual(ids(view), []);
    view.close();
  });

  test('health checks: the aggregate is published; markUnhealthy: false checks are informational', async () => {
    const { clock, mem } = setup();
    const view = watchInstances(mem, 'api', { clock });
    const m = await join(mem, {
      service: 'api',
      id: 'h',
      clock,
      checks: [
        { kind: 'ttl', name: 'worker', ttl: '10s' },
        { kind: 'ttl', name: 'cache', ttl: '10s', markUnhealthy: false, initialStatus: 'passing' },
      ],
    });
    await until(
      view,
      (is) => is[0]?.health === 'failing',
      'initially failing (Consul: critical until proven)',
    );
    assert.deepEqual(view.get('h')?.checks, { worker: 'failing', cache: 'passing' });
    m.checks.get('worker')?.pass();
    await until(view, (is) => is[0]?.health === 'passing', 'passing');
    m.checks.get('cache')?.fail('cache down');
    await until(view, (is) => is[0]?.checks?.cache === 'failing', 'cache failing');
    assert.equal(
      view.get('h')?.health,
      'passing',
      'an informational check does not mark the instance unhealthy',
    );
    m.checks.get('worker')?.warn();
    await until(view, (is) => is[0]?.health === 'warning', 'warning');
    await clock.tick(10_000, 100); // no report within the TTL
    await until(view, (is) => is[0]?.health === 'failing', 'ttl expired');
    await m.leave();
    view.close();
  });
});
