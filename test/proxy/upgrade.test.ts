import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { startProxy, type Proxy } from '../../src/proxy/index.js';
import { openMemoryStore, type MemoryStore } from '../../src/store/index.js';
import { waitFor } from '../../src/testing/index.js';
import { keyFor, ownOnePartition, startBackend, testConfig, type Backend } from './helpers.js';

const SVC = '/muster/services/ws/';

/** Opens an upgrade through the proxy, sends `ping`, resolves to what came back after the 101. */
function upgradeAndEcho(address: string, key: string | undefined): Promise<{ head: string; echoed: string }> {
  const [host, port] = address.split(':') as [string, string];
  return new Promise((resolve, reject) => {
    let buf = '';
    let head: string | undefined;
    const s = connect(Number(port), host, () =>
      s.write(
        `GET /socket HTTP/1.1\r\nHost: h\r\n${key === undefined ? '' : `x-key: ${key}\r\n`}Connection: Upgrade\r\nUpgrade: echo\r\n\r\n`,
      ),
    );
    s.setEncoding('utf8');
    s.on('data', (d: string) => {
      buf += d;
      if (head === undefined) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        head = buf.slice(0, end);
        buf = buf.slice(end + 4);
        if (!head.startsWith('HTTP/1.1 101')) {
          s.destroy();
          return resolve({ head, echoed: '' });
        }
        s.write('ping');
      }
      if (buf.includes('ping')) {
        s.destroy();
        resolve({ head, echoed: buf });
      }
    });
    s.on('error', reject);
  });
}

describe('proxy: upgrades (WebSocket) routed by key', { timeout: 30_000 }, () => {
  let store: MemoryStore;
  let proxy: Proxy;
  let a: Backend;
  let b: Backend;

  before(async () => {
    store = openMemoryStore();
    const echo = (name: string) => async (): Promise<Backend> => {
      const be = await startBackend(name);
      be.server.on('upgrade', (_req, socket) => {
        socket.write(
          `HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\nx-backend: ${name}\r\n\r\n`,
        );
        socket.pipe(socket);
      });
      return be;
    };
    a = await echo('a')();
    b = await echo('b')();
    await store.put(`${SVC}spec`, JSON.stringify({ partitions: 2 }));
    await store.put(`${SVC}owners/0`, JSON.stringify({ instance: 'a', since: '', address: a.address }));
    await store.put(`${SVC}owners/1`, JSON.stringify({ instance: 'b', since: '', address: b.address }));
    proxy = await startProxy({ store, config: testConfig('ws') });
  });
  after(async () => {
    await proxy.close();
    await a.close();
    await b.close();
    await store.close();
  });

  test('each key reaches its partition owner and bytes flow both ways', async () => {
    const address = proxy.addresses[0] as string;
    const toA = await upgradeAndEcho(address, keyFor(0, 2));
    assert.match(toA.head, /^HTTP\/1\.1 101/);
    assert.match(toA.head, /x-backend: a/);
    assert.equal(toA.echoed, 'ping');
    const toB = await upgradeAndEcho(address, keyFor(1, 2));
    assert.match(toB.head, /x-backend: b/);
  });

  test('no key: 400; no owner: 502', async () => {
    const address = proxy.addresses[0] as string;
    assert.match((await upgradeAndEcho(address, undefined)).head, /^HTTP\/1\.1 400/);
    await store.delete(`${SVC}owners/1`);
    await waitFor(() => !proxy.source.owners.has('1'), { what: 'owner of 1 gone' });
    assert.match((await upgradeAndEcho(address, keyFor(1, 2))).head, /^HTTP\/1\.1 502/);
  });
});

describe('proxy: an upgrade the backend refuses', { timeout: 30_000 }, () => {
  let store: MemoryStore;
  let proxy: Proxy;
  let plain: Backend;

  before(async () => {
    store = openMemoryStore();
    plain = await startBackend('plain'); // no 'upgrade' listener: node answers it as a plain request
    await store.put(`${SVC}spec`, JSON.stringify({ partitions: 1 }));
    await store.put(
      `${SVC}owners/0`,
      JSON.stringify({ instance: 'plain', since: '', address: plain.address }),
    );
    proxy = await startProxy({ store, config: testConfig('ws') });
  });
  after(async () => {
    await proxy.close();
    await plain.close();
    await store.close();
  });

  for (const protocol of ['websocket', 'echo']) {
    test(`${protocol}: the answer reaches the client, the connection ends, and bytes sent after the request never reach the backend`, async () => {
      const [host, port] = (proxy.addresses[0] as string).split(':') as [string, string];
      const seen = plain.seen.length;
      // the second request is sent once the refusal arrived: it must not reach the backend
      let smuggled = false;
      const answer = await new Promise<string>((resolve) => {
        let buf = '';
        const s = connect(Number(port), host, () =>
          s.write(
            `GET /socket HTTP/1.1\r\nHost: h\r\nx-key: k\r\nConnection: Upgrade\r\nUpgrade: ${protocol}\r\n\r\n`,
          ),
        );
        s.setEncoding('latin1');
        s.on('data', (d: string) => {
          buf += d;
          if (smuggled || !buf.includes('\r\n\r\n')) return;
          smuggled = true;
          s.write(
            'GET /internal HTTP/1.1\r\nHost: h\r\nx-key: someone-else\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n',
          );
          // the old tunnel forwarded it: stop waiting for a close that would never come
          void waitFor(() => plain.seen.includes('/internal'), { timeoutMs: 20_000 }).then(
            () => resolve(buf),
            () => undefined,
          );
        });
        s.on('close', () => resolve(buf));
        s.on('error', () => resolve(buf));
      });
      assert.match(answer, /^HTTP\/1\.1 200 /);
      assert.equal(answer.match(/HTTP\/1\.1 /g)?.length, 1, 'one answer');
      assert.deepEqual(plain.seen.slice(seen), ['/socket'], 'the bytes after the request were not forwarded');
    });
  }
});

describe('proxy: an upgrade the backend never answers', { timeout: 30_000 }, () => {
  test('504 after upstream.headersTimeout, naming the backend; the backend connection is closed', async () => {
    const store = openMemoryStore();
    const silent = await startBackend('silent');
    let upgrades = 0;
    let backendClosed = false;
    silent.server.on('upgrade', (_req, socket) => {
      // accepts, reads the head, never answers; reads on, so it sees the proxy end its side
      upgrades++;
      socket.on('end', () => {
        backendClosed = true;
        socket.destroy();
      });
      socket.resume();
    });
    await ownOnePartition(store, 'mute', 'silent', silent.address);
    const proxy = await startProxy({
      store,
      config: testConfig('mute', { upstream: { headersTimeout: '300ms' } }),
    });
    try {
      await waitFor(() => proxy.server.explain('k').ok, { what: 'the route' });
      const [host, port] = (proxy.addresses[0] as string).split(':') as [string, string];
      const answer = await new Promise<string>((resolve, reject) => {
        let buf = '';
        const s = connect(Number(port), host, () =>
          s.write(
            'GET /socket HTTP/1.1\r\nHost: h\r\nx-key: k\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n',
          ),
        );
        s.setEncoding('latin1');
        s.on('data', (d: string) => (buf += d));
        s.on('end', () => resolve(buf));
        s.on('error', reject);
      });
      assert.match(answer, /^HTTP\/1\.1 504 /);
      assert.match(answer, new RegExp(`backend ${silent.address} did not answer the upgrade within 300 ms`));
      assert.equal(upgrades, 1);
      await waitFor(() => backendClosed, { what: "the backend's side closed" });
    } finally {
      await proxy.close();
      await silent.close();
      await store.close();
    }
  });
});
