import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Agent } from 'undici';
import { joinPartitioned, type PartitionedHandle } from '../../src/partitions/index.js';
import { startProxy, type Proxy } from '../../src/proxy/index.js';
import { openMemoryStore, type MemoryStore } from '../../src/store/index.js';
import { ManualClock, waitFor } from '../../src/testing/index.js';
import { partitionForKey } from '../../src/placement/index.js';
import {
  call,
  keyFor,
  ownOnePartition,
  rawRequest,
  startBackend,
  testConfig,
  type Backend,
} from './helpers.js';

const COUNT = 4;

/** A backend that owns partitions through joinPartitioned and answers with its own ownership record. */
async function ownerBackend(
  store: MemoryStore,
  id: string,
): Promise<{ backend: Backend; handle: PartitionedHandle; owned: Map<string, number> }> {
  const owned = new Map<string, number>();
  const backend = await startBackend(id, (req, res) => {
    const key = String(req.headers['x-key']);
    const p = String(partitionForKey(key, COUNT));
    const token = owned.get(p);
    res.writeHead(token === undefined ? 421 : 200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ backend: id, partition: p, token: token ?? null }));
    return true;
  });
  const handle = await joinPartitioned(store, {
    service: 'chat',
    partitions: COUNT,
    id,
    address: backend.address,
    ttl: 2000,
    onAcquire: (p, { token }) => {
      owned.set(p, token);
    },
    onRelease: (p) => {
      owned.delete(p);
    },
  });
  return { backend, handle, owned };
}

describe('proxy routing', { timeout: 60_000 }, () => {
  let store: MemoryStore;
  let proxy: Proxy;
  let agent: Agent;
  const closers: (() => Promise<unknown>)[] = [];

  before(async () => {
    store = openMemoryStore();
    agent = new Agent();
  });
  after(async () => {
    await agent.close();
    for (const c of closers.reverse()) await c();
    await store.close();
  });

  test("routes each key to its partition owner, with the owner's fencing token, through a hand-off and a route pin", async () => {
    const a = await ownerBackend(store, 'a');
    closers.push(() => a.backend.close());
    proxy = await startProxy({ store, config: testConfig('chat') });
    closers.push(() => proxy.close());
    const address = proxy.addresses[0] as string;
    await waitFor(() => proxy.source.owners.size === COUNT, {
      what: 'a owns every partition',
      timeoutMs: 10_000,
    });
    const keys = Array.from({ length: COUNT }, (_, p) => keyFor(p, COUNT));
    for (const key of keys) {
      const r = await call(agent, address, '/x', { key });
      assert.equal(r.status, 200, r.text);
      const body = r.json();
      const explained = proxy.server.explain(key);
      assert.ok(explained.ok);
      assert.equal(body.backend, 'a');
      assert.equal(body.token, explained.token, 'the proxy names the token the backend itself holds');
    }

    // b joins: placement moves about half of the partitions to b (a hand-off per partition)
    const b = await ownerBackend(store, 'b');
    closers.push(() => b.backend.close());
    closers.push(() => b.handle.close());
    await waitFor(
      () =>
        b.owned.size > 0 &&
        [...proxy.source.owners.values()].filter((o) => o.instance === 'b').length === b.owned.size &&
        proxy.source.owners.size === COUNT,
      { what: 'b owns its share and the proxy sees it', timeoutMs: 15_000 },
    );
    for (const key of keys) {
      const r = await call(agent, address, '/x', { key });
      assert.equal(r.status, 200, r.text);
      const body = r.json();
      const owner = proxy.source.owners.get(body.partition as string);
      assert.equal(body.backend, owner?.instance, `key ${key} reached the owner`);
      assert.equal(body.token, owner?.token);
    }

    // a leaves: every partition moves to b; held GETs (no owner mid hand-off) reach b
    const loop = (async () => {
      let errors = 0;
      for (let i = 0; i < 200; i++) {
        const r = await call(agent, address, '/x', { key: keys[i % COUNT] as string });
        if (r.status !== 200) errors++;
      }
      return errors;
    })();
    await a.handle.leave();
    await waitFor(
      () => b.owned.size === COUNT && [...proxy.source.owners.values()].every((o) => o.instance === 'b'),
      {
        what: 'b owns everything',
        timeoutMs: 15_000,
      },
    );
    for (const key of keys) {
      const body = (await call(agent, address, '/x', { key })).json();
      assert.equal(body.backend, 'b');
      assert.equal(body.token, b.owned.get(body.partition as string));
    }
    const errors = await loop;
    // a released a partition before its key was deleted: a GET in that window reaches a, which
    // answers 421 (not the owner); the proxy holds it until its view shows the next owner, so no
    // client sees an error, and every 200 came from the owner with its own token (checked above)
    assert.equal(errors, 0, `${errors} GETs failed during the hand-off`);
    assert.equal(
      (await proxy.server.metrics.registry.getMetricsAsJSON())
        .find((m) => m.name === 'muster_proxy_requests_total')
        ?.values.filter((v) => String(v.labels['status']) === '421').length ?? 0,
      0,
      'no 421 reached a client',
    );
    // the per-request metrics (kept outside prom-client on the hot path) show in the exposition
    const text = await proxy.server.metrics.registry.metrics();
    assert.match(text, /muster_proxy_requests_total\{backend="127\.0\.0\.1:\d+",status="200"\} [1-9]/);
    assert.match(text, /muster_proxy_upstream_seconds_bucket\{le="\+Inf",backend="127\.0\.0\.1:\d+"\} [1-9]/);
    assert.match(text, /muster_proxy_upstream_seconds_count\{backend="127\.0\.0\.1:\d+"\} [1-9]/);

    // a route pin wins over the partition owner; unpinning restores the hash
    const c = await startBackend('c');
    closers.push(() => c.close());
    await store.put(
      '/muster/services/chat/instances/c',
      JSON.stringify({ id: 'c', address: c.address, state: 'draining' }),
    );
    await store.put('/muster/services/chat/routes/bigrealm', JSON.stringify({ instance: 'c' }));
    await waitFor(() => proxy.source.routes.has('bigrealm') && proxy.source.instances.has('c'), {
      what: 'pin seen',
    });
    const pinned = await call(agent, address, '/x', { key: 'bigrealm' });
    assert.equal(pinned.json().backend, 'c');
    assert.equal(proxy.server.explain('bigrealm').via, 'route');
    await store.delete('/muster/services/chat/routes/bigrealm');
    await waitFor(() => !proxy.source.routes.has('bigrealm'), { what: 'unpin seen' });
    assert.equal((await call(agent, address, '/x', { key: 'bigrealm' })).json().backend, 'b');
  });

  test('a request without a key is 400 with a clear body; a default key routes it', async () => {
    const address = proxy.addresses[0] as string;
    const r = await call(agent, address, '/x');
    assert.equal(r.status, 400);
    assert.equal(r.json().error?.code, 'MUSTER_NO_ROUTING_KEY');
    assert.match(r.json().error?.message ?? '', /header:x-key/);
    const bad = await call(agent, address, '/x', { key: 'a'.repeat(200) });
    assert.equal(bad.status, 400);
    const d = await startProxy({
      store,
      config: testConfig('chat', { defaultKey: 'lobby', hold: { timeout: 2000 } }),
    });
    closers.push(() => d.close());
    const ok = await call(agent, d.addresses[0] as string, '/x');
    assert.equal(ok.status, 200, ok.text);
  });

  test('forwarding: X-Forwarded-*, X-Request-Id generated or kept, traceparent kept, hop-by-hop removed, bodies streamed', async () => {
    const address = proxy.addresses[0] as string;
    await store.put('/muster/services/chat/routes/echo', JSON.stringify({ instance: 'c' }));
    await waitFor(() => proxy.source.routes.has('echo'), { what: 'pin seen' });
    const r = await call(agent, address, '/echo?q=1', {
      method: 'POST',
      key: 'echo',
      body: 'hello body',
      headers: { traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' },
    });
    assert.equal(r.status, 200, r.text);
    const body = r.json() as { body: string; headers: Record<string, string>; path: string };
    assert.equal(body.body, 'hello body');
    assert.equal(body.path, '/echo?q=1');
    assert.equal(body.headers['traceparent'], '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01');
    assert.equal(body.headers['x-forwarded-for'], '127.0.0.1');
    assert.equal(body.headers['x-forwarded-proto'], 'http');
    assert.match(body.headers['x-request-id'] ?? '', /^[0-9a-f-]{36}$/);
    // a raw request naming a header in Connection: that header is hop-by-hop and not forwarded
    const raw = await rawRequest(
      address,
      'GET /x HTTP/1.1\r\nHost: h\r\nx-key: echo\r\nx-drop: me\r\nConnection: close, x-drop\r\n\r\n',
    );
    assert.match(raw, /^HTTP\/1.1 200/);
    assert.doesNotMatch(raw, /x-drop/);
    const kept = await call(agent, address, '/x', { key: 'echo', headers: { 'x-request-id': 'req-42' } });
    assert.equal((kept.json().headers as Record<string, string>)['x-request-id'], 'req-42');
  });
});

describe('proxy: an idle proxy has no timer', { timeout: 30_000 }, () => {
  test('the sweep starts with a connection and stops once no client or upstream connection is left', async () => {
    const store = openMemoryStore();
    const clock = new ManualClock();
    const b = await startBackend('idle');
    await ownOnePartition(store, 'idle', 'idle', b.address);
    const proxy = await startProxy({
      store,
      clock,
      config: testConfig('idle', { upstream: { keepAliveTimeout: '4s' } }),
    });
    try {
      await waitFor(() => proxy.server.explain('k').ok, { what: 'the route' });
      // listening, no connection: nothing armed on the proxy's clock (the sweep ran forever before)
      assert.equal(clock.pendingTimers, 0, 'an idle proxy arms no timer');

      const answer = await rawRequest(
        proxy.addresses[0] as string,
        'GET / HTTP/1.1\r\nhost: x\r\nx-key: k\r\nconnection: close\r\n\r\n',
      );
      assert.match(answer, /^HTTP\/1\.1 200 /);
      // the client's connection is gone; the upstream one waits in the pool for its keep-alive
      // timeout, which only the sweep enforces: still armed
      assert.equal(clock.pendingTimers, 1, 'the sweep runs while an upstream connection is pooled');
      await clock.tick(5000, 250);
      await waitFor(() => clock.pendingTimers === 0, {
        what: 'the sweep to stop once the pooled connection is closed',
        timeoutMs: 5000,
      });
      // and a new connection starts it again, with a fresh coarse clock
      const again = await rawRequest(
        proxy.addresses[0] as string,
        'GET / HTTP/1.1\r\nhost: x\r\nx-key: k\r\nconnection: close\r\n\r\n',
      );
      assert.match(again, /^HTTP\/1\.1 200 /);
      assert.equal(clock.pendingTimers, 1);

      // a held request, released and answered, leaves no timer behind either (its hold deadline
      // used to stay armed for hold.timeout after the answer)
      await store.delete('/muster/services/idle/owners/0');
      await waitFor(() => !proxy.server.explain('k').ok, { what: 'the owner gone from the view' });
      const held = rawRequest(
        proxy.addresses[0] as string,
        'GET / HTTP/1.1\r\nhost: x\r\nx-key: k\r\nconnection: close\r\n\r\n',
      );
      await waitFor(() => proxy.server.held()['partition:0'] === 1, { what: 'the request held' });
      await ownOnePartition(store, 'idle', 'idle', b.address);
      let answered = '';
      void held.then((a) => (answered = a));
      await waitFor(
        async () => {
          await clock.tick(10); // the hold queue's release runs on the proxy's clock
          return answered !== '';
        },
        { what: 'the held request answered' },
      );
      assert.match(answered, /^HTTP\/1\.1 200 /);
      await clock.tick(5000, 250);
      await waitFor(() => clock.pendingTimers === 0, {
        what: 'no timer left after a held request was answered',
        timeoutMs: 5000,
      });
    } finally {
      await proxy.close();
      await b.close();
      await store.close();
    }
  });

  test('a backend no longer routed to is forgotten once its pooled connections closed', async () => {
    const store = openMemoryStore();
    const clock = new ManualClock();
    const [a, b] = [await startBackend('a'), await startBackend('b')];
    const proxy = await startProxy({
      store,
      clock,
      config: testConfig('forget', { upstream: { keepAliveTimeout: '4s' } }),
    });
    const get = (): Promise<string> =>
      rawRequest(
        proxy.addresses[0] as string,
        'GET / HTTP/1.1\r\nhost: x\r\nx-key: k\r\nconnection: close\r\n\r\n',
      );
    const backends = (): unknown => proxy.server.status()['backends'];
    try {
      await ownOnePartition(store, 'forget', 'a', a.address);
      await waitFor(() => proxy.server.explain('k').ok, { what: 'the route to a' });
      assert.match(await get(), /^HTTP\/1\.1 200 /);
      assert.deepEqual(backends(), [`http://${a.address}`]);

      await ownOnePartition(store, 'forget', 'b', b.address);
      await waitFor(() => proxy.server.explain('k').instance === 'b', {
        what: 'the route to b',
      });
      assert.match(await get(), /^HTTP\/1\.1 200 /);
      assert.deepEqual(backends(), [`http://${a.address}`, `http://${b.address}`]);

      // both pooled connections time out (keep-alive 4 s on the proxy's clock): both origins go
      // (before, every origin ever routed to stayed in the map for the worker's life)
      await clock.tick(5000, 250);
      await waitFor(() => (backends() as string[]).length === 0, {
        what: 'the idle backends forgotten',
        timeoutMs: 5000,
      });
      // and a request to b starts a new pool for it
      assert.match(await get(), /^HTTP\/1\.1 200 /);
      assert.deepEqual(backends(), [`http://${b.address}`]);
    } finally {
      await proxy.close();
      await Promise.all([a.close(), b.close()]);
      await store.close();
    }
  });
});
