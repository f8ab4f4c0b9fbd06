import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { Agent } from 'undici';
import { startProxy, type Proxy } from '../../src/proxy/index.js';
import { openMemoryStore, type MemoryStore } from '../../src/store/index.js';
import { waitFor } from '../../src/testing/index.js';
import { call, keyFor, startBackend, testConfig } from './helpers.js';

const SVC = '/muster/services/hold/';
const COUNT = 2;

/** A loopback port nobody listens on (taken, then released). */
async function deadPort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

describe('proxy holding', { timeout: 60_000 }, () => {
  let store: MemoryStore;
  let agent: Agent;
  const closers: (() => Promise<unknown>)[] = [];
  const k0 = keyFor(0, COUNT);
  const k1 = keyFor(1, COUNT);

  before(async () => {
    store = openMemoryStore();
    agent = new Agent();
    await store.put(`${SVC}spec`, JSON.stringify({ partitions: COUNT }));
  });
  after(async () => {
    await agent.close();
    for (const c of closers.reverse()) await c();
    await store.close();
  });

  async function proxy(extra: Record<string, unknown> = {}): Promise<Proxy> {
    const p = await startProxy({ store, config: testConfig('hold', extra) });
    closers.push(() => p.close());
    return p;
  }

  test('a GET is held while the partition has no owner and released when an owner appears; a POST is 502 at once', async () => {
    const p = await proxy();
    const address = p.addresses[0] as string;
    const b = await startBackend('b');
    closers.push(() => b.close());
    await store.put(`${SVC}instances/b`, JSON.stringify({ id: 'b', address: b.address }));
    const held = call(agent, address, '/poll?ms=1', { key: k0 });
    await waitFor(() => p.server.held()['partition:0'] === 1, { what: 'the GET is held' });
    const started = Date.now();
    const post = await call(agent, address, '/x', { key: k0, method: 'POST', body: 'x' });
    assert.equal(post.status, 502);
    assert.equal(post.json().error?.code, 'MUSTER_UPSTREAM_UNAVAILABLE');
    assert.ok(Date.now() - started < 1000, 'the POST was not held');
    const del = await call(agent, address, '/x', { key: k0, method: 'DELETE' });
    assert.equal(del.status, 502);
    await store.put(`${SVC}owners/0`, JSON.stringify({ instance: 'b', since: '' }));
    const r = await held;
    assert.equal(r.status, 200);
    assert.equal(r.json().backend, 'b');
    assert.equal(p.server.status()['held'], 0);
    assert.deepEqual(
      b.seen.filter((s) => s === '/x'),
      [],
      'no POST or DELETE reached the backend',
    );
  });

  test('a refusing backend: GET held until it listens again (probe), POST 502; a backend closing before answering: GET retried', async () => {
    const port = await deadPort();
    await store.put(
      `${SVC}owners/1`,
      JSON.stringify({ instance: 'x', since: '', address: `127.0.0.1:${port}` }),
    );
    const p = await proxy({ hold: { probeInterval: 50 } });
    const address = p.addresses[0] as string;
    const post = await call(agent, address, '/x', { key: k1, method: 'POST', body: 'x' });
    assert.equal(post.status, 502);
    const held = call(agent, address, '/x', { key: k1 });
    await waitFor(() => p.server.held()['partition:1'] === 1, { what: 'the GET is held' });
    // the backend comes back on the same port and closes the first request's connection before answering
    let dropped = 0;
    const b = await startBackend(
      'restarted',
      (req) => {
        if (dropped > 0) return false;
        dropped++;
        req.socket.destroy();
        return true;
      },
      port,
    );
    closers.push(() => b.close());
    const r = await held;
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json().backend, 'restarted');
    assert.equal(dropped, 1, 'the first attempt was cut by the backend and retried');
  });

  test('hold timeout answers the configured status and body; caps answer 503 with Retry-After', async () => {
    await store.delete(`${SVC}owners/0`);
    const p = await proxy({
      hold: {
        timeout: 300,
        maxPerDestination: 2,
        maxTotal: 3,
        timeoutStatus: 503,
        timeoutBody: 'try later',
        retryAfterSeconds: 7,
      },
    });
    const address = p.addresses[0] as string;
    await waitFor(() => !p.source.owners.has('0'), { what: 'no owner of 0' });
    const first = call(agent, address, '/a', { key: k0 });
    const second = call(agent, address, '/b', { key: k0 });
    await waitFor(() => p.server.held()['partition:0'] === 2, { what: 'two held' });
    const third = await call(agent, address, '/c', { key: k0 });
    assert.equal(third.status, 503);
    assert.equal(third.headers['retry-after'], '7');
    assert.equal(third.json().error?.code, 'MUSTER_HOLD_FULL');
    const t0 = Date.now();
    const [a, b] = await Promise.all([first, second]);
    assert.equal(a.status, 503);
    assert.equal(a.text, 'try later');
    assert.equal(b.text, 'try later');
    assert.ok(Date.now() - t0 < 2000);
    // default: 504 with a coded JSON body
    const d = await proxy({ hold: { timeout: 100 } });
    const timedOut = await call(agent, d.addresses[0] as string, '/d', { key: k0 });
    assert.equal(timedOut.status, 504);
    assert.equal(timedOut.json().error?.code, 'MUSTER_HOLD_TIMEOUT');
  });

  test('a held request whose client goes away leaves the queue', async () => {
    const p = await proxy();
    const address = p.addresses[0] as string;
    const ac = new AbortController();
    const gone = call(agent, address, '/x', { key: k0, signal: ac.signal }).catch((err: unknown) => err);
    await waitFor(() => p.server.held()['partition:0'] === 1, { what: 'held' });
    ac.abort();
    await gone;
    await waitFor(() => p.server.status()['held'] === 0, { what: 'the queue is empty' });
    // a client that only closes its sending side (FIN) has left too, as with node:http's default
    const { connect } = await import('node:net');
    const [host, port] = [
      address.slice(0, address.lastIndexOf(':')),
      address.slice(address.lastIndexOf(':') + 1),
    ];
    const s = connect(Number(port), host, () =>
      s.write(`GET /y HTTP/1.1\r\nHost: h\r\nx-key: ${k0}\r\n\r\n`),
    );
    s.on('error', () => undefined);
    await waitFor(() => p.server.held()['partition:0'] === 1, { what: 'held again' });
    s.end();
    await waitFor(() => p.server.status()['held'] === 0, { what: 'the queue is empty after the FIN' });
    s.destroy();
  });

  test('held requests are released at the configured rate per backend', async () => {
    await store.delete(`${SVC}owners/0`);
    const p = await proxy({ hold: { releaseRate: 20 } });
    const address = p.addresses[0] as string;
    await waitFor(() => !p.source.owners.has('0'), { what: 'no owner of 0' });
    const b = await startBackend('slowstart');
    closers.push(() => b.close());
    const n = 12;
    const answers: number[] = [];
    const all = Array.from({ length: n }, (_, i) =>
      call(agent, address, `/r${i}`, { key: k0 }).then((r) => {
        answers.push(Date.now());
        return r.status;
      }),
    );
    await waitFor(() => p.server.held()['partition:0'] === n, { what: 'all held' });
    await store.put(`${SVC}owners/0`, JSON.stringify({ instance: 'b', since: '', address: b.address }));
    assert.deepEqual(await Promise.all(all), Array(n).fill(200));
    const spread = Math.max(...answers) - Math.min(...answers);
    // burst of 2 (a tenth of a second), then 20/s: the last of 12 about 0.5 s after the first
    assert.ok(spread >= 350, `released over ${spread} ms, faster than 20/s`);
  });

  test('a partition whose owner marks it moving: its GETs are held and released to the new owner (transparent move)', async () => {
    const p = await proxy();
    const address = p.addresses[0] as string;
    const oldOwner = await startBackend('old');
    const newOwner = await startBackend('new');
    closers.push(
      () => oldOwner.close(),
      () => newOwner.close(),
    );
    await store.put(
      `${SVC}owners/0`,
      JSON.stringify({ instance: 'old', since: '', address: oldOwner.address }),
    );
    await waitFor(() => p.source.owners.get('0')?.instance === 'old', { what: 'old owns 0' });
    assert.equal((await call(agent, address, '/x', { key: k0 })).json().backend, 'old');
    await store.put(
      `${SVC}owners/0`,
      JSON.stringify({ instance: 'old', since: '', address: oldOwner.address, moving: true }),
    );
    await waitFor(() => p.source.owners.get('0')?.moving === true, { what: 'moving seen' });
    const held = call(agent, address, '/x', { key: k0 });
    await waitFor(() => p.server.held()['partition:0'] === 1, { what: 'held while moving' });
    const seenByOld = oldOwner.seen.length;
    await store.delete(`${SVC}owners/0`);
    await store.put(
      `${SVC}owners/0`,
      JSON.stringify({ instance: 'new', since: '', address: newOwner.address }),
    );
    const r = await held;
    assert.equal(r.json().backend, 'new');
    assert.equal(
      oldOwner.seen.length,
      seenByOld,
      'nothing reached the old owner after it marked the partition moving',
    );
  });

  test('a 421 (not the owner) from a backend the view still shows as owner: the GET is held until the next owner appears; a POST gets the 421', async () => {
    const p = await proxy();
    const address = p.addresses[0] as string;
    const stale = await startBackend('stale', (_req, res) => {
      res.writeHead(421, { 'content-type': 'application/json' });
      res.end('{"error":{"code":"MUSTER_NOT_OWNER"}}');
      return true;
    });
    const next = await startBackend('next');
    closers.push(
      () => stale.close(),
      () => next.close(),
    );
    await store.put(
      `${SVC}owners/0`,
      JSON.stringify({ instance: 'stale', since: '', address: stale.address }),
    );
    await waitFor(() => p.source.owners.get('0')?.instance === 'stale', { what: 'stale owns 0' });
    const post = await call(agent, address, '/x', { key: k0, method: 'POST', body: 'x' });
    assert.equal(post.status, 421, 'a POST is never held or replayed');
    const held = call(agent, address, '/x', { key: k0 });
    await waitFor(() => p.server.held()['partition:0'] === 1, { what: 'the GET is held after the 421' });
    assert.equal(stale.seen.length, 2);
    await store.delete(`${SVC}owners/0`);
    await store.put(`${SVC}owners/0`, JSON.stringify({ instance: 'next', since: '', address: next.address }));
    const r = await held;
    assert.equal(r.status, 200);
    assert.equal(r.json().backend, 'next');
    assert.equal(stale.seen.length, 2, 'the held GET was not sent to the stale owner again');
  });
});
