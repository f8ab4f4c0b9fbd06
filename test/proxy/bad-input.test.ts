import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { Agent } from 'undici';
import { startProxy, type Proxy } from '../../src/proxy/index.js';
import { openMemoryStore, type MemoryStore } from '../../src/store/index.js';
import { waitFor } from '../../src/testing/index.js';
import { call, ownOnePartition, rawRequest, startBackend, testConfig, type Backend } from './helpers.js';

describe('proxy: bad input and hostile clients', { timeout: 60_000 }, () => {
  let store: MemoryStore;
  let proxy: Proxy;
  let backend: Backend;
  let agent: Agent;
  let address: string;

  before(async () => {
    store = openMemoryStore();
    agent = new Agent();
    backend = await startBackend('b', (req, res) => {
      if (req.url !== '/big') return false;
      // 64 MiB, written as fast as the proxy takes it
      const chunk = Buffer.alloc(1024 * 1024, 120);
      let left = 64;
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      const write = (): void => {
        while (left > 0) {
          left--;
          if (!res.write(chunk)) return void res.once('drain', write);
        }
        res.end();
      };
      write();
      return true;
    });
    await ownOnePartition(store, 'bad', 'b', backend.address);
    proxy = await startProxy({
      store,
      config: testConfig('bad', {
        client: { headersTimeout: 500, requestTimeout: 1500, idleTimeout: 1000, maxHeaderSize: 8192 },
      }),
    });
    address = proxy.addresses[0] as string;
  });
  after(async () => {
    await agent.close();
    await proxy.close();
    await backend.close();
    await store.close();
  });

  async function stillServes(): Promise<void> {
    const r = await call(agent, address, '/ok', { key: 'k' });
    assert.equal(r.status, 200);
  }

  const smuggling: [string, string][] = [
    [
      'Content-Length and Transfer-Encoding together',
      'POST /echo HTTP/1.1\r\nHost: h\r\nx-key: k\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: h\r\nx-key: k\r\n\r\n',
    ],
    [
      'two different Content-Lengths',
      'POST /echo HTTP/1.1\r\nHost: h\r\nx-key: k\r\nContent-Length: 5\r\nContent-Length: 40\r\n\r\nhelloGET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n',
    ],
    [
      'an invalid Content-Length',
      'POST /echo HTTP/1.1\r\nHost: h\r\nx-key: k\r\nContent-Length: 5x\r\n\r\nhello',
    ],
    ['a malformed request line', 'GARBAGE\r\n\r\n'],
    [
      'a bad chunk size',
      'POST /echo HTTP/1.1\r\nHost: h\r\nx-key: k\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n',
    ],
  ];
  for (const [what, bytes] of smuggling) {
    test(`${what}: 400 and the connection is closed; nothing reaches the backend`, async () => {
      const seen = backend.seen.length;
      const answer = await rawRequest(address, bytes);
      assert.match(answer, /^HTTP\/1\.1 400 /);
      assert.equal(answer.match(/HTTP\/1\.1/g)?.length, 1, 'one answer: no smuggled second request');
      assert.equal(backend.seen.length, seen);
      assert.ok(!backend.seen.includes('/smuggled'));
      await stillServes();
    });
  }

  test('a Connection field listing Content-Length and Host removes neither: no body goes upstream as a request', async () => {
    const smuggled = 'GET /smuggled HTTP/1.1\r\nHost: h\r\nx-key: k\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n';
    const seen = backend.seen.length;
    const answer = await rawRequest(
      address,
      `POST /echo HTTP/1.1\r\nHost: h\r\nx-key: k\r\nConnection: content-length, host, close\r\nContent-Length: ${smuggled.length}\r\n\r\n${smuggled}`,
    );
    assert.match(answer, /^HTTP\/1\.1 200 /);
    // (the body is chunked: the JSON is between the first '{' and the last '}')
    const echoed = JSON.parse(answer.slice(answer.indexOf('{'), answer.lastIndexOf('}') + 1)) as {
      body: string;
      headers: Record<string, string>;
    };
    assert.equal(echoed.body, smuggled, 'the bytes reached the backend as the POST body');
    assert.equal(echoed.headers['host'], 'h');
    await stillServes();
    assert.deepEqual(backend.seen.slice(seen), ['/echo', '/ok']);
  });

  test('a malformed request pipelined behind good ones is refused after they are answered, in order', async () => {
    const seen = backend.seen.length;
    const answer = await rawRequest(
      address,
      'GET /first HTTP/1.1\r\nHost: h\r\nx-key: k\r\n\r\n' +
        'POST /echo HTTP/1.1\r\nHost: h\r\nx-key: k\r\nContent-Length: 5\r\n\r\nhello' +
        `GET /third HTTP/1.1\r\nHost: h\r\nx-key: k\r\nx-big: ${'a'.repeat(10_000)}\r\n\r\n`,
    );
    const statuses = [...answer.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => m[1]);
    assert.deepEqual(statuses, ['200', '200', '431'], 'each request its own answer, the refusal last');
    assert.deepEqual(backend.seen.slice(seen), ['/first', '/echo']);
    await stillServes();
  });

  test('bytes after a request with Connection: close are not read: the request is answered, nothing else', async () => {
    const seen = backend.seen.length;
    const answer = await rawRequest(
      address,
      'GET /closing HTTP/1.1\r\nHost: h\r\nx-key: k\r\nConnection: close\r\n\r\nGARBAGE\r\n\r\n',
    );
    const statuses = [...answer.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => m[1]);
    assert.deepEqual(statuses, ['200']);
    assert.deepEqual(backend.seen.slice(seen), ['/closing']);
  });

  test('oversized headers: 431', async () => {
    const answer = await rawRequest(
      address,
      `GET / HTTP/1.1\r\nHost: h\r\nx-key: k\r\nx-big: ${'a'.repeat(10_000)}\r\n\r\n`,
    );
    assert.match(answer, /^HTTP\/1\.1 431 /);
    await stillServes();
  });

  test('slowloris (headers never finished): 408 and closed after the headers timeout', async () => {
    const started = Date.now();
    const answer = await new Promise<string>((resolve) => {
      const chunks: Buffer[] = [];
      const [host, port] = address.split(':') as [string, string];
      let drip: NodeJS.Timeout | undefined;
      const s = connect(Number(port), host, () => {
        s.write('GET / HTTP/1.1\r\nHost: h\r\n');
        drip = setInterval(() => s.write('x-a: b\r\n'), 100);
      });
      s.on('data', (c: Buffer) => chunks.push(c));
      s.on('close', () => {
        clearInterval(drip);
        resolve(Buffer.concat(chunks).toString());
      });
      s.on('error', () => undefined);
    });
    const took = Date.now() - started;
    assert.match(answer, /^HTTP\/1\.1 408 /);
    assert.ok(took < 3000, `closed after ${took} ms`);
    await stillServes();
  });

  test('a request body not finished within the request timeout (a slow upload): 408 and closed', async () => {
    const started = Date.now();
    const answer = await new Promise<string>((resolve) => {
      const chunks: Buffer[] = [];
      const [host, port] = address.split(':') as [string, string];
      let drip: NodeJS.Timeout | undefined;
      const s = connect(Number(port), host, () => {
        s.write('POST /echo HTTP/1.1\r\nHost: h\r\nx-key: k\r\nContent-Length: 1000\r\n\r\n');
        // a byte every 100 ms: never idle, never done
        drip = setInterval(() => s.write('x'), 100);
      });
      s.on('data', (c: Buffer) => chunks.push(c));
      s.on('close', () => {
        clearInterval(drip);
        resolve(Buffer.concat(chunks).toString());
      });
      s.on('error', () => undefined);
    });
    const took = Date.now() - started;
    assert.match(answer, /^HTTP\/1\.1 408 /);
    assert.ok(took >= 1300 && took < 4000, `closed after ${took} ms`);
    await stillServes();
  });

  test('a slow reader is cut after the idle timeout; other clients are served meanwhile', async () => {
    const before = proxy.server.status()['connections'] as number;
    const [host, port] = address.split(':') as [string, string];
    const s = connect(Number(port), host, () => s.write('GET /big HTTP/1.1\r\nHost: h\r\nx-key: k\r\n\r\n'));
    s.pause(); // never read
    const closed = new Promise<void>((resolve) => s.on('close', () => resolve()));
    s.on('error', () => undefined);
    await waitFor(() => (proxy.server.status()['connections'] as number) > before, { what: 'connected' });
    await stillServes();
    await waitFor(() => (proxy.server.status()['connections'] as number) <= before, {
      what: 'the slow reader is cut',
      timeoutMs: 10_000,
    });
    s.destroy();
    await closed;
    await stillServes();
  });

  test('an expectation other than 100-continue: 417 before any body; nothing reaches the backend', async () => {
    const seen = backend.seen.length;
    const answer = await rawRequest(
      address,
      'POST /echo HTTP/1.1\r\nHost: h\r\nx-key: k\r\nExpect: 200-ok\r\nContent-Length: 5\r\n\r\n',
    );
    assert.match(answer, /^HTTP\/1\.1 417 Expectation Failed\r\n/);
    assert.match(answer, /only 100-continue/);
    assert.equal(backend.seen.length, seen);
    await stillServes();
  });

  test('Expect: 100-continue from an HTTP/1.0 client gets no 1xx answer', async () => {
    const answer = await rawRequest(
      address,
      'POST /echo HTTP/1.0\r\nHost: h\r\nx-key: k\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello',
    );
    assert.doesNotMatch(answer, /100 Continue/);
    assert.match(answer, /^HTTP\/1\.1 200 [\s\S]*hello/);
  });

  test("the proxy's own answers carry a Date (RFC 9110 §6.6.1), refusals included", async () => {
    const before = Math.floor(Date.now() / 1000) * 1000;
    const own = await call(agent, address, '/x', { key: 'a b' });
    assert.equal(own.status, 400);
    const refusal = await rawRequest(address, 'GARBAGE\r\n\r\n');
    const after = Date.now();
    for (const date of [own.headers['date'], /\r\ndate: ([^\r]+)\r\n/.exec(refusal)?.[1]]) {
      assert.ok(typeof date === 'string', `a Date field: ${String(date)}`);
      assert.match(date, /^[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT$/);
      const t = Date.parse(date);
      assert.ok(t >= before && t <= after, `${date} is now`);
    }
  });

  test('absurd keys: 400, not a store key', async () => {
    for (const key of ['a/b', 'x'.repeat(129), 'a b']) {
      const r = await call(agent, address, '/x', { key });
      assert.equal(r.status, 400, key);
      assert.equal(r.json().error?.code, 'MUSTER_NO_ROUTING_KEY');
    }
  });
});
