/**
 * The upstream pool and response framer against a scripted raw backend: every response framing of
 * RFC 9112 §6.3, keep-alive reuse, a chunked request body re-framed, a malformed response, a backend
 * that never answers (504).
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { Readable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { Agent, request } from 'undici';
import { startProxy, type Proxy } from '../../src/proxy/index.js';
import { openMemoryStore, type MemoryStore } from '../../src/store/index.js';
import { waitFor } from '../../src/testing/index.js';
import { call, rawRequest, testConfig } from './helpers.js';

const SVC = '/muster/services/up/';

/** Answers by path; `/chunked-in` answers once the chunked body's last chunk arrived. */
const SCRIPT: Record<string, string> = {
  '/chunked':
    'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: t\r\n\r\n',
  '/close': 'HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end',
  '/head': 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n',
  '/early': 'HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok',
  '/nocontent': 'HTTP/1.1 204 No Content\r\n\r\n',
  '/length': 'HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-Set: a\r\nX-Set: b\r\n\r\nabc',
  '/bad': 'HTTP/1.1 2x0 Nope\r\n\r\n',
  '/below-100': 'HTTP/1.1 099 Nope\r\nContent-Length: 2\r\n\r\nno',
  '/badchunk': 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n',
  '/splitting': 'HTTP/1.1 200 OK\r\nX-A: a\nInjected: yes\r\nContent-Length: 2\r\n\r\nok',
};

/**
 * 16 MiB of random bytes (more than the loopback's socket buffers hold): sent by the backend in pieces,
 * compared by hash after the proxy.
 */
const RANDOM = randomBytes(16 * 1024 * 1024);
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** Writes RANDOM with a Content-Length, or chunked in chunks of varied sizes. */
/** 4 MiB of RANDOM framed in chunks of 1–64 bytes (one upstream read holds hundreds), built once. */
const TINY_BODY = RANDOM.subarray(0, 4 * 1024 * 1024);
const TINY_CHUNKED = ((): Buffer => {
  const parts: Buffer[] = [];
  let size = 1;
  for (let i = 0; i < TINY_BODY.length; i += size, size = (size % 64) + 1) {
    const piece = TINY_BODY.subarray(i, i + size);
    parts.push(Buffer.from(`${piece.length.toString(16)}\r\n`), piece, Buffer.from('\r\n'));
  }
  parts.push(Buffer.from('0\r\n\r\n'));
  return Buffer.concat(parts);
})();

function writeTinyChunks(socket: Socket): void {
  socket.write('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n');
  socket.write(TINY_CHUNKED);
}

function writeRandom(socket: Socket, chunked: boolean): void {
  if (!chunked) {
    socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${RANDOM.length}\r\n\r\n`);
    for (let i = 0; i < RANDOM.length; i += 100_000) socket.write(RANDOM.subarray(i, i + 100_000));
    return;
  }
  socket.write('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n');
  let size = 1;
  for (let i = 0; i < RANDOM.length;) {
    const piece = RANDOM.subarray(i, i + size);
    socket.write(`${piece.length.toString(16)}\r\n`);
    socket.write(piece);
    socket.write('\r\n');
    i += piece.length;
    size = (size * 7 + 13) % 90_001;
  }
  socket.write('0\r\n\r\n');
}

describe('proxy: the raw upstream pool and response framer', { timeout: 30_000 }, () => {
  let store: MemoryStore;
  let proxy: Proxy;
  let backend: Server;
  let agent: Agent;
  let address: string;
  let connections = 0;
  const sockets = new Set<Socket>();
  const received: string[] = [];
  /** Sockets whose next request is dropped unanswered (a backend closing an idle keep-alive socket). */
  const stale = new WeakSet<Socket>();

  before(async () => {
    backend = createServer((socket: Socket) => {
      connections++;
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
      let buf = '';
      socket.on('error', () => socket.destroy());
      socket.on('data', (d: Buffer) => {
        buf += d.toString('latin1');
        for (;;) {
          const end = buf.indexOf('\r\n\r\n');
          if (end < 0) return;
          const head = buf.slice(0, end);
          const path = head.split(' ')[1] ?? '/';
          let used = end + 4;
          const length = /content-length: (\d+)/i.exec(head);
          if (length !== null) {
            if (buf.length < used + Number(length[1])) return;
            used += Number(length[1]);
          }
          if (/transfer-encoding: chunked/i.test(head)) {
            const last = buf.indexOf('0\r\n\r\n', used);
            if (last < 0) return;
            used = last + 5;
          }
          const request = buf.slice(0, used);
          received.push(request);
          buf = buf.slice(used);
          if (stale.has(socket)) {
            socket.destroy();
            return;
          }
          if (path === '/stale-next') {
            socket.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
            stale.add(socket);
            continue;
          }
          if (path === '/silent') continue;
          if (path === '/echo') {
            const body = request.slice(end + 4);
            socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
            continue;
          }
          if (path === '/head-first') {
            // the head now, the body 300 ms later (a stream, an event source)
            socket.write('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n');
            setTimeout(() => socket.write('5\r\nlater\r\n0\r\n\r\n'), 300);
            continue;
          }
          if (path === '/random-tiny') {
            writeTinyChunks(socket);
            continue;
          }
          if (path === '/random' || path === '/random-chunked') {
            writeRandom(socket, path === '/random-chunked');
            continue;
          }
          if (path === '/chunked-in') {
            socket.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nin');
            continue;
          }
          socket.write(SCRIPT[path] ?? 'HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n');
          if (path === '/close') socket.end();
        }
      });
    });
    await new Promise<void>((resolve) => backend.listen(0, '127.0.0.1', resolve));
    const port = (backend.address() as AddressInfo).port;
    store = openMemoryStore();
    await store.put(`${SVC}spec`, JSON.stringify({ partitions: 1 }));
    await store.put(
      `${SVC}owners/0`,
      JSON.stringify({ instance: 'b', since: '', address: `127.0.0.1:${port}` }),
    );
    proxy = await startProxy({ store, config: testConfig('up', { upstream: { headersTimeout: 400 } }) });
    address = proxy.addresses[0] as string;
    agent = new Agent({ connections: 1 });
  });
  after(async () => {
    await agent.close();
    await proxy.close();
    for (const s of sockets) s.destroy();
    await new Promise<void>((resolve) => backend.close(() => resolve()));
    await store.close();
  });

  test('a chunked response is decoded (extensions and trailers dropped) and passed on whole', async () => {
    const r = await call(agent, address, '/chunked', { key: 'k' });
    assert.equal(r.status, 200);
    assert.equal(r.text, 'hello world');
  });

  test('large bodies of random bytes arrive intact to a slow reader (Content-Length and chunked)', async () => {
    // the pool reads into one shared buffer: a body piece the client's socket cannot take at once
    // must have been copied, or the next read overwrites it. Tiny chunks: one read holds hundreds;
    // no MaxListenersExceededWarning may appear (one wait for 'drain' serves a whole read)
    const warnings: string[] = [];
    const onWarning = (w: Error): void => void warnings.push(`${w.name}: ${w.message}`);
    process.on('warning', onWarning);
    after(() => void process.off('warning', onWarning));
    for (const path of ['/random', '/random-chunked', '/random-tiny']) {
      const r = await request(`http://${address}${path}`, { dispatcher: agent, headers: { 'x-key': 'k' } });
      assert.equal(r.statusCode, 200);
      const chunks: Buffer[] = [];
      let n = 0;
      for await (const c of r.body) {
        chunks.push(c as Buffer);
        // a stall at the start fills every socket buffer on the way; then slow reads
        if (n++ % 16 === 0) await new Promise((resolve) => setTimeout(resolve, n === 1 ? 300 : 2));
      }
      const got = Buffer.concat(chunks);
      const sent = path === '/random-tiny' ? TINY_BODY : RANDOM;
      assert.equal(got.length, sent.length, path);
      assert.equal(sha(got), sha(sent), `${path}: the body arrived changed`);
    }
    await new Promise((resolve) => setImmediate(resolve)); // (warnings are emitted on the next tick)
    assert.deepEqual(
      warnings.filter((w) => w.startsWith('MaxListenersExceededWarning')),
      [],
    );
  });

  test('a response head that comes without body bytes is passed on at once, not with the body', async () => {
    const started = Date.now();
    const r = await request(`http://${address}/head-first`, { dispatcher: agent, headers: { 'x-key': 'k' } });
    const headAfter = Date.now() - started;
    assert.equal(r.statusCode, 200);
    assert.ok(headAfter < 250, `the head came after ${headAfter} ms`);
    assert.equal(await r.body.text(), 'later');
    assert.ok(Date.now() - started >= 280);
  });

  test('a response head with a bare LF (response splitting) is 502, nothing of it passed on', async () => {
    const r = await call(agent, address, '/splitting', { key: 'k' });
    assert.equal(r.status, 502);
    assert.equal(r.headers['injected'], undefined);
  });

  test('a close-delimited response ends with the connection; the next request gets a new one', async () => {
    const r = await call(agent, address, '/close', { key: 'k' });
    assert.equal(r.text, 'until the end');
    assert.equal((await call(agent, address, '/length', { key: 'k' })).text, 'abc');
  });

  test('kept alive: HEAD (Content-Length, no body), 1xx skipped, 204 and Content-Length reuse one connection', async () => {
    await call(agent, address, '/length', { key: 'k' });
    const before = connections;
    const head = await call(agent, address, '/head', { key: 'k', method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(head.headers['content-length'], '5');
    const early = await call(agent, address, '/early', { key: 'k' });
    assert.equal(early.status, 200);
    assert.equal(early.text, 'ok');
    assert.equal((await call(agent, address, '/nocontent', { key: 'k' })).status, 204);
    const r = await call(agent, address, '/length', { key: 'k' });
    assert.deepEqual(r.headers['x-set'], ['a', 'b']);
    assert.equal(connections, before, 'no new upstream connection');
  });

  test('a chunked request body goes upstream chunked, with X-Forwarded-* and a request id', async () => {
    const r = await request(`http://${address}/chunked-in`, {
      dispatcher: agent,
      method: 'POST',
      headers: { 'x-key': 'k' },
      body: Readable.from(['ab', 'cde']),
    });
    assert.equal(await r.body.text(), 'in');
    const seen = received.find((s) => s.startsWith('POST /chunked-in')) ?? '';
    assert.match(seen, /transfer-encoding: chunked\r\n/);
    assert.match(seen, /x-forwarded-for: 127\.0\.0\.1\r\n/);
    assert.match(seen, /x-request-id: \S+\r\n/);
    const body = seen.slice(seen.indexOf('\r\n\r\n') + 4).replace(/\r\n/g, '|');
    assert.match(body, /^(2\|ab\|3\|cde\||5\|abcde\|)0\|\|$/);
  });

  test('Expect: 100-continue — the client gets 100 Continue, the body goes upstream without the Expect field', async () => {
    const { connect } = await import('node:net');
    const [host, port] = [
      address.slice(0, address.lastIndexOf(':')),
      Number(address.slice(address.lastIndexOf(':') + 1)),
    ];
    const s = connect(port, host);
    let got = '';
    s.on('data', (d: Buffer) => (got += d.toString('latin1')));
    s.write(
      'POST /echo HTTP/1.1\r\nHost: h\r\nx-key: k\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n',
    );
    await waitFor(() => got.includes('100 Continue'), { what: '100 Continue' });
    assert.equal(
      received.filter((r) => r.startsWith('POST /echo')).length,
      0,
      'nothing upstream before the body',
    );
    s.write('hello');
    await waitFor(() => got.endsWith('hello'), { what: 'the echoed body' });
    s.destroy();
    const seen = received.find((r) => r.startsWith('POST /echo')) ?? '';
    assert.doesNotMatch(seen, /expect:/i);
    assert.match(seen, /\r\n\r\nhello$/);
  });

  test('pipelined requests are answered in order on one connection; framing to HTTP/1.1 and 1.0 clients', async () => {
    const get = (path: string, extra = ''): string =>
      `GET ${path} HTTP/1.1\r\nHost: h\r\nx-key: k\r\n${extra}\r\n`;
    // four requests in one write: Content-Length, chunked (re-chunked), 204, then one asking to close
    const answer = await rawRequest(
      address,
      get('/length') + get('/chunked') + get('/nocontent') + get('/length', 'Connection: close\r\n'),
    );
    const statuses = [...answer.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => m[1]);
    assert.deepEqual(statuses, ['200', '200', '204', '200'], answer);
    const parts = answer.split(/(?=HTTP\/1\.1 \d{3} )/);
    assert.match(parts[0] ?? '', /content-length: 3\r\n[\s\S]*\r\n\r\nabc$/i);
    assert.match(parts[0] ?? '', /keep-alive: timeout=\d+/i);
    assert.match(
      parts[1] ?? '',
      /transfer-encoding: chunked\r\n[\s\S]*\r\n\r\nb\r\nhello world\r\n0\r\n\r\n$|transfer-encoding: chunked\r\n[\s\S]*\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n$/i,
    );
    assert.doesNotMatch(parts[2] ?? '', /content-length|transfer-encoding/i);
    assert.match(parts[3] ?? '', /connection: close\r\n[\s\S]*abc$/i);
    // HTTP/1.0: no chunked coding; a body of unknown length ends with the connection
    const old = await rawRequest(address, 'GET /chunked HTTP/1.0\r\nHost: h\r\nx-key: k\r\n\r\n');
    assert.match(old, /^HTTP\/1\.1 200 /);
    assert.doesNotMatch(old, /transfer-encoding/i);
    assert.match(old, /connection: close\r\n[\s\S]*\r\nhello world$/i);
    // the backend's X-Set fields arrive as it sent them, one line each
    const twice = await rawRequest(address, get('/length', 'Connection: close\r\n'));
    assert.match(twice, /X-Set: a\r\nX-Set: b\r\n/);
  });

  test('a malformed response: 502, never passed on; the proxy keeps serving', async () => {
    for (const path of ['/bad', '/badchunk']) {
      const r = await call(agent, address, path, { key: 'k', method: 'POST', body: 'x' }).catch(
        (err: unknown) => ({ status: 0, text: String(err) }),
      );
      // /bad fails before a head went out (502); /badchunk after (the response is cut)
      if (path === '/bad') {
        assert.equal(r.status, 502);
        assert.match(r.text, /MUSTER_UPSTREAM_UNAVAILABLE.*status line/);
      } else assert.ok(r.status === 0 || r.status === 200, `cut: ${r.status}`);
    }
    // a status below 100 is no interim response to skip: 502 at once
    const low = await call(agent, address, '/below-100', { key: 'k', method: 'POST', body: 'x' });
    assert.equal(low.status, 502);
    assert.match(low.text, /below 100/);
    assert.equal((await call(agent, address, '/length', { key: 'k' })).text, 'abc');
  });

  test('a kept-alive socket the backend closed as a request went out: a GET goes again on a new connection, a POST is 502', async () => {
    assert.equal((await call(agent, address, '/stale-next', { key: 'k' })).status, 200);
    const before = connections;
    const get = await call(agent, address, '/length', { key: 'k' });
    assert.equal(get.status, 200, 'the GET was sent again, on a new connection');
    assert.equal(get.text, 'abc');
    assert.equal(connections, before + 1);
    assert.equal((await call(agent, address, '/stale-next', { key: 'k' })).status, 200);
    const post = await call(agent, address, '/echo', { method: 'POST', body: 'once', key: 'k' });
    assert.equal(post.status, 502, 'a POST is never replayed');
    assert.match(post.text, /closed a kept-alive connection before answering/);
    assert.equal((await call(agent, address, '/length', { key: 'k' })).status, 200);
  });

  test('a backend that never answers: 504 after the upstream headers timeout', async () => {
    const r = await call(agent, address, '/silent', { key: 'k', method: 'POST', body: 'x' });
    assert.equal(r.status, 504);
    assert.match(r.text, /MUSTER_TIMEOUT/);
  });
});
