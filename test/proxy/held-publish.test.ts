/**
 * The proxy publishes its held queue sizes under its session lease (`status/<s>/proxies/<id>`),
 * coalesced (a burst of held requests costs a few writes, not one per request), and the dashboard's
 * fleet model shows them per destination; the record goes when the proxy does.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Agent } from 'undici';
import { HELD_PUBLISH_INTERVAL_MS, parseProxyRecord, startProxy } from '../../src/proxy/index.js';
import { openMemoryStore, type MemoryStore } from '../../src/store/index.js';
import {
  HELD_PUBLISH_MAX_RETRY_MS,
  HELD_PUBLISH_RETRY_MS,
  HeldPublisher,
  type ProxyRecord,
} from '../../src/proxy/held-publisher.js';
import { FaultyStore, ManualClock, waitFor } from '../../src/testing/index.js';
import { FleetModel } from '../../src/ui/index.js';
import { call, keyFor, startBackend, testConfig } from './helpers.js';

const SVC = '/muster/services/hp/';
const KEY = '/muster/status/hp/proxies/p1';

describe('proxy: held queues published for the dashboard', { timeout: 30_000 }, () => {
  let store: MemoryStore;
  let agent: Agent;

  before(async () => {
    store = openMemoryStore();
    agent = new Agent({ connections: 100 });
    await store.put(`${SVC}spec`, JSON.stringify({ partitions: 2 }));
  });
  after(async () => {
    await agent.close();
    await store.close();
  });

  test('50 held requests: the record shows them within a few writes; released: 0; closed: gone', async () => {
    const proxy = await startProxy({ store, config: testConfig('hp'), publishHeld: { id: 'p1' } });
    const fleet = new FleetModel(store);
    const b = await startBackend('b');
    try {
      await waitFor(async () => (await store.get(KEY)) !== undefined, { what: 'the first record' });
      const first = parseProxyRecord((await store.get(KEY))?.value ?? '');
      assert.equal(first?.total, 0);
      assert.notEqual((await store.get(KEY))?.lease, '0', 'under a lease');
      const key0 = keyFor(0, 2);
      const polls = Array.from({ length: 50 }, () =>
        call(agent, proxy.addresses[0] as string, '/x', { key: key0 }),
      );
      await waitFor(() => proxy.server.held()['partition:0'] === 50, { what: '50 held' });
      await waitFor(
        async () => parseProxyRecord((await store.get(KEY))?.value ?? '')?.held['partition:0'] === 50,
        { what: 'the record shows 50', timeoutMs: 5 * HELD_PUBLISH_INTERVAL_MS + 2000 },
      );
      const writes = (await store.get(KEY))?.version ?? 0;
      assert.ok(writes <= 5, `coalesced: ${writes} versions of the record for 50 held requests`);
      await fleet.ready();
      await waitFor(
        () => fleet.snapshot().services.find((s) => s.name === 'hp')?.held['partition:0'] === 50,
        {
          what: 'the dashboard model shows the queue',
        },
      );
      const svc = fleet.snapshot().services.find((s) => s.name === 'hp');
      assert.deepEqual(
        svc?.proxies.map((p) => [p.id, p.total]),
        [['p1', 50]],
      );
      await store.put(`${SVC}owners/0`, JSON.stringify({ instance: 'b', since: '', address: b.address }));
      assert.deepEqual(
        (await Promise.all(polls)).map((r) => r.status).filter((s) => s !== 200),
        [],
      );
      await waitFor(async () => parseProxyRecord((await store.get(KEY))?.value ?? '')?.total === 0, {
        what: 'the record shows 0',
      });
    } finally {
      await proxy.close();
      fleet.close();
      await b.close();
    }
    assert.equal(await store.get(KEY), undefined, 'the lease ended with the proxy');
  });
});

describe('proxy: the held-queue publisher sleeps while nothing is held', { timeout: 30_000 }, () => {
  test('no reading and no timer while idle; a held request, a release and a lost session each wake it', async () => {
    const clock = new ManualClock();
    const store = openMemoryStore({ clock });
    const key = '/muster/status/sl/proxies/p';
    let sizes: Record<string, number> = {};
    let reads = 0;
    const listeners = new Set<() => void>();
    const publisher = new HeldPublisher({
      store,
      root: '/muster/',
      service: 'sl',
      id: 'p',
      sizes: () => {
        reads++;
        return sizes;
      },
      changes: (l) => {
        listeners.add(l);
        return () => listeners.delete(l);
      },
      clock,
    });
    const record = async (): Promise<ProxyRecord | undefined> =>
      parseProxyRecord((await store.get(key))?.value ?? '');
    try {
      clock.advance(0); // the first reading is scheduled at once
      await waitFor(async () => (await record())?.total === 0, { what: 'the first record' });
      // idle: twenty intervals without a reading (it read every interval before)
      await clock.tick(1); // the tick that wrote the record has finished and gone to sleep
      const idleReads = reads;
      await clock.tick(20 * HELD_PUBLISH_INTERVAL_MS, HELD_PUBLISH_INTERVAL_MS);
      assert.equal(reads, idleReads, `asleep: ${reads - idleReads} readings in 20 idle intervals`);

      // a request is held: woken at once, and it reads every interval while anything is held
      sizes = { 'partition:0': 3 };
      for (const l of listeners) l();
      clock.advance(0);
      await waitFor(async () => (await record())?.total === 3, { what: 'the record shows 3' });
      const heldReads = reads;
      await clock.tick(4 * HELD_PUBLISH_INTERVAL_MS, HELD_PUBLISH_INTERVAL_MS);
      assert.ok(reads >= heldReads + 4, `awake while held: ${reads - heldReads} readings in 4 intervals`);

      // released: the record says 0, then it sleeps again
      sizes = {};
      await clock.tick(HELD_PUBLISH_INTERVAL_MS);
      await waitFor(async () => (await record())?.total === 0, { what: 'the record shows 0' });
      await clock.tick(1);
      const releasedReads = reads;
      await clock.tick(20 * HELD_PUBLISH_INTERVAL_MS, HELD_PUBLISH_INTERVAL_MS);
      assert.equal(reads, releasedReads, 'asleep again once the record says nothing is held');

      // the lease is gone (the store lost it): the record went with it, and comes back under a new one
      const lease = (await store.get(key))?.lease;
      assert.ok(lease !== undefined && lease !== '0');
      await store.revokeLease(lease);
      assert.equal(await store.get(key), undefined);
      await waitFor(
        async () => {
          await clock.tick(1000);
          const r = await store.get(key);
          return r !== undefined && r.lease !== lease;
        },
        { what: 'the record written again under a new lease' },
      );
    } finally {
      await publisher.close();
      await store.close();
    }
  });
});

describe('proxy: the held-queue publisher under a failing store', { timeout: 30_000 }, () => {
  test('it backs off (5 s, 10 s, 20 s… up to 60 s), reports a failure streak once, and recovers', async () => {
    const clock = new ManualClock();
    const inner = openMemoryStore();
    const store = new FaultyStore(inner, { clock });
    let failing = true;
    let grants = 0;
    const grant = store.grantLease.bind(store);
    store.grantLease = (ttl, options) => {
      grants++;
      // a saturated worker: its lease grant misses the deadline
      return failing ? Promise.reject(new Error('DEADLINE_EXCEEDED')) : grant(ttl, options);
    };
    const errors: unknown[] = [];
    const publisher = new HeldPublisher({
      store,
      root: '/muster/',
      service: 'bo',
      id: 'p',
      sizes: () => ({ 'partition:0': 1 }),
      clock,
      onError: (err) => errors.push(err),
    });
    try {
      clock.advance(0); // the first try is scheduled at once
      await waitFor(() => grants === 1, { what: 'the first try' });
      // tries come at 5, 10, 20, 40, 60, 60 s after the one before — not every 5 s
      const waits = [HELD_PUBLISH_RETRY_MS, 10_000, 20_000, 40_000, HELD_PUBLISH_MAX_RETRY_MS, 60_000];
      for (const [i, ms] of waits.entries()) {
        clock.advance(ms - 1);
        await new Promise((resolve) => setImmediate(resolve));
        assert.equal(grants, i + 1, `no try before ${ms} ms`);
        clock.advance(1);
        await waitFor(() => grants === i + 2, { what: `try ${i + 2}` });
      }
      // one report for the streak, one more after a minute of it
      assert.ok(errors.length >= 1 && errors.length <= 4, `${errors.length} reports for 7 failures`);
      failing = false;
      clock.advance(60_000);
      await waitFor(async () => (await inner.get('/muster/status/bo/proxies/p')) !== undefined, {
        what: 'the record written once the store answers',
      });
    } finally {
      await publisher.close();
      await inner.close();
    }
  });
});
