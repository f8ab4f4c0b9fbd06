/**
 * The gRPC transport of `muster serve` (transport.ts on its own HTTP/2, h2.ts), seen
 * from a raw HTTP/2 client, so each protocol rule is checked on the wire: the response's headers,
 * framing and trailers, trailers-only errors, `grpc-timeout`, the compressed flag, the message size
 * limit, unknown methods, a wrong content type, a message split over DATA frames, two messages in
 * one DATA frame on a stream, the `token` metadata sent twice, and a client that resets its call.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, type ClientHttp2Session, type IncomingHttpHeaders } from 'node:http2';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { encodeGrpcMessage, parseGrpcTimeout } from '../../src/server/grpc/transport.js';
import { etcdServices } from './etcd-proto.js';
import { type MusterServer, startServer } from '../../src/server/index.js';

const TOKEN = 'transport-token-0123456789';

interface Answer {
  headers: IncomingHttpHeaders;
  trailers: IncomingHttpHeaders;
  messages: Buffer[];
}

function frame(body: Buffer, flag = 0): Buffer {
  const out = Buffer.alloc(5 + body.length);
  out[0] = flag;
  out.writeUInt32BE(body.length, 1);
  body.copy(out, 5);
  return out;
}

function messagesOf(data: Buffer): Buffer[] {
  const out: Buffer[] = [];
  for (let at = 0; at + 5 <= data.length;) {
    const n = data.readUInt32BE(at + 1);
    if (at + 5 + n > data.length) break;
    out.push(data.subarray(at + 5, at + 5 + n));
    at += 5 + n;
  }
  return out;
}

/** Sends one call; `chunks` are written as they are (each becomes DATA), then the stream ends. */
function call(
  session: ClientHttp2Session,
  path: string,
  chunks: Buffer[],
  extra: Record<string, string | string[]> = {},
  options: { end?: boolean } = {},
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const stream = session.request({
      ':method': 'POST',
      ':path': path,
      'content-type': 'application/grpc',
      te: 'trailers',
      ...extra,
    });
    let headers: IncomingHttpHeaders = {};
    let trailers: IncomingHttpHeaders = {};
    const data: Buffer[] = [];
    stream.on('response', (h) => {
      headers = h;
      // A trailers-only response carries the status in its headers.
      if (h['grpc-status'] !== undefined) trailers = h;
    });
    stream.on('trailers', (t: IncomingHttpHeaders) => {
      trailers = t;
    });
    stream.on('data', (d: Buffer) => data.push(d));
    stream.on('end', () => resolve({ headers, trailers, messages: messagesOf(Buffer.concat(data)) }));
    stream.on('error', reject);
    for (const c of chunks) stream.write(c);
    if (options.end !== false) stream.end();
  });
}

describe('muster serve: gRPC transport (own HTTP/2)', { timeout: 60_000 }, () => {
  let dir: string;
  let server: MusterServer;
  let session: ClientHttp2Session;
  const kv = etcdServices().KV;
  const putRequest = (key: string, value: string): Buffer =>
    (kv.Put?.requestSerialize as (v: unknown) => Buffer)({
      key: Buffer.from(key),
      value: Buffer.from(value),
    });
  const rangeRequest = (key: string): Buffer =>
    (kv.Range?.requestSerialize as (v: unknown) => Buffer)({ key: Buffer.from(key) });
  const rangeResponse = (b: Buffer): { kvs: { value: Buffer }[]; header: { revision: string } } =>
    (kv.Range?.responseDeserialize as (b: Buffer) => never)(b);

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'muster-serve-transport-'));
    server = await startServer({ dataDir: dir, listen: '127.0.0.1:0' });
    session = connect(`http://127.0.0.1:${server.port}`);
  });
  after(async () => {
    session?.close();
    await server?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('a unary call: 200, application/grpc, one framed message, grpc-status 0 in trailers', async () => {
    const put = await call(session, '/etcdserverpb.KV/Put', [frame(putRequest('/t/a', 'one'))]);
    assert.equal(put.headers[':status'], 200);
    assert.match(String(put.headers['content-type']), /^application\/grpc/);
    assert.equal(put.trailers['grpc-status'], '0');
    assert.equal(put.messages.length, 1);
    const got = await call(session, '/etcdserverpb.KV/Range', [frame(rangeRequest('/t/a'))]);
    assert.equal(rangeResponse(got.messages[0] as Buffer).kvs[0]?.value.toString(), 'one');
  });

  test('a message split over DATA frames, byte by byte, is put together', async () => {
    const bytes = frame(putRequest('/t/split', 'x'.repeat(40_000)));
    const chunks = [
      bytes.subarray(0, 1),
      bytes.subarray(1, 3),
      bytes.subarray(3, 7),
      bytes.subarray(7, 20_000),
      bytes.subarray(20_000),
    ];
    const put = await call(session, '/etcdserverpb.KV/Put', chunks);
    assert.equal(put.trailers['grpc-status'], '0');
    const got = await call(session, '/etcdserverpb.KV/Range', [frame(rangeRequest('/t/split'))]);
    assert.equal(rangeResponse(got.messages[0] as Buffer).kvs[0]?.value.length, 40_000);
  });

  test('errors are trailers-only responses with etcd status codes and percent-encoded messages', async () => {
    const bad = await call(session, '/etcdserverpb.KV/Put', [frame(putRequest('', 'v'))]);
    assert.equal(bad.messages.length, 0);
    assert.equal(bad.headers['grpc-status'], '3');
    assert.equal(bad.headers['grpc-message'], 'etcdserver: key is not provided');
    assert.equal(encodeGrpcMessage('a 100% é'), 'a 100%25 %C3%A9');
  });

  test('unknown method: UNIMPLEMENTED; wrong content type: HTTP 415', async () => {
    const none = await call(session, '/etcdserverpb.Maintenance/MoveLeader', [frame(Buffer.alloc(0))]);
    assert.equal(none.trailers['grpc-status'], '12');
    assert.match(String(none.trailers['grpc-message']), /unknown method MoveLeader/);
    const html = await call(session, '/etcdserverpb.KV/Range', [frame(rangeRequest('/t/a'))], {
      'content-type': 'text/html',
    });
    assert.equal(html.headers[':status'], 415);
  });

  test('the compressed flag, an oversized message and garbage get statuses; the connection carries on', async () => {
    const gz = await call(session, '/etcdserverpb.KV/Range', [frame(rangeRequest('/t/a'), 1)], {
      'grpc-encoding': 'gzip',
    });
    assert.equal(gz.trailers['grpc-status'], '12');
    const plain = await call(session, '/etcdserverpb.KV/Range', [frame(rangeRequest('/t/a'), 1)]);
    assert.equal(plain.trailers['grpc-status'], '13');
    const huge = Buffer.alloc(5);
    huge.writeUInt32BE(3 * 1024 * 1024, 1);
    const big = await call(session, '/etcdserverpb.KV/Put', [huge]);
    assert.equal(big.trailers['grpc-status'], '8');
    assert.match(String(big.trailers['grpc-message']), /larger than max/);
    const garbage = await call(session, '/etcdserverpb.KV/Put', [
      frame(Buffer.from([0x0a, 0xff, 0xff, 0xff, 0x0f])),
    ]);
    assert.equal(garbage.trailers['grpc-status'], '13');
    const empty = await call(session, '/etcdserverpb.KV/Put', []);
    assert.equal(empty.trailers['grpc-status'], '13');
    const ok = await call(session, '/etcdserverpb.KV/Range', [frame(rangeRequest('/t/a'))]);
    assert.equal(ok.trailers['grpc-status'], '0');
  });

  test('grpc-timeout: a call still running at its deadline ends with DEADLINE_EXCEEDED', async () => {
    assert.equal(parseGrpcTimeout('5S'), 5000);
    assert.equal(parseGrpcTimeout('250m'), 250);
    assert.equal(parseGrpcTimeout('1H'), 3_600_000);
    assert.equal(parseGrpcTimeout('12'), undefined);
    // A watch stream that never ends on its own.
    const watch = etcdServices().Watch.Watch;
    const create = (watch?.requestSerialize as (v: unknown) => Buffer)({
      create_request: { key: Buffer.from('/t/w') },
    });
    const t0 = Date.now();
    const w = await call(
      session,
      '/etcdserverpb.Watch/Watch',
      [frame(create)],
      { 'grpc-timeout': '200m' },
      { end: false },
    );
    assert.equal(w.trailers['grpc-status'], '4');
    assert.ok(Date.now() - t0 >= 150);
    assert.equal(w.messages.length, 1, 'the created response came first');
  });

  test('a stream: two requests in one DATA frame, events in order, OK when the client half-closes', async () => {
    const watch = etcdServices().Watch.Watch;
    const ser = watch?.requestSerialize as (v: unknown) => Buffer;
    const de = watch?.responseDeserialize as (b: Buffer) => {
      created: boolean;
      watch_id: string;
      events: unknown[];
    };
    const both = Buffer.concat([
      frame(ser({ create_request: { key: Buffer.from('/t/s1') } })),
      frame(ser({ create_request: { key: Buffer.from('/t/s2') } })),
    ]);
    const stream = session.request({
      ':method': 'POST',
      ':path': '/etcdserverpb.Watch/Watch',
      'content-type': 'application/grpc',
    });
    const got: Buffer[] = [];
    let pending = Buffer.alloc(0);
    let trailers: IncomingHttpHeaders = {};
    let wake = (): void => undefined;
    const ended = new Promise<void>((resolve) => stream.on('end', resolve));
    stream.on('trailers', (t: IncomingHttpHeaders) => {
      trailers = t;
    });
    stream.on('data', (d: Buffer) => {
      pending = Buffer.concat([pending, d]);
      const ms = messagesOf(pending);
      let used = 0;
      for (const m of ms) used += 5 + m.length;
      pending = pending.subarray(used);
      got.push(...ms);
      wake();
    });
    const seen = async (n: number): Promise<void> => {
      while (got.length < n) await new Promise<void>((resolve) => (wake = resolve));
    };
    stream.write(both);
    await seen(2);
    assert.deepEqual(
      got.map((b) => de(b).created),
      [true, true],
    );
    await call(session, '/etcdserverpb.KV/Put', [frame(putRequest('/t/s2', 'v'))]);
    await seen(3);
    assert.equal(de(got[2] as Buffer).watch_id, '1');
    stream.end();
    await ended;
    assert.equal(trailers['grpc-status'], '0');
  });

  test('a client that resets its call does not disturb the server', async () => {
    const stream = session.request({
      ':method': 'POST',
      ':path': '/etcdserverpb.Watch/Watch',
      'content-type': 'application/grpc',
    });
    stream.write(
      frame(
        (etcdServices().Watch.Watch?.requestSerialize as (v: unknown) => Buffer)({
          create_request: { key: Buffer.from('/t/r') },
        }),
      ),
    );
    await new Promise((resolve) => stream.once('data', resolve));
    const closed = new Promise((resolve) => stream.once('close', resolve));
    stream.close(8); // CANCEL
    await closed;
    const ok = await call(session, '/etcdserverpb.KV/Put', [frame(putRequest('/t/r', 'v'))]);
    assert.equal(ok.trailers['grpc-status'], '0');
  });
});

describe('muster serve: gRPC transport with a token', { timeout: 60_000 }, () => {
  let dir: string;
  let server: MusterServer;
  let session: ClientHttp2Session;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'muster-serve-transport-auth-'));
    server = await startServer({ dataDir: dir, listen: '127.0.0.1:0', token: TOKEN });
    session = connect(`http://127.0.0.1:${server.port}`);
  });
  after(async () => {
    session?.close();
    await server?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('the token metadata: missing, wrong, right, and sent twice (python-etcd3) all answer as etcd', async () => {
    const range = (etcdServices().KV.Range?.requestSerialize as (v: unknown) => Buffer)({
      key: Buffer.from('/a'),
    });
    const none = await call(session, '/etcdserverpb.KV/Range', [frame(range)]);
    assert.equal(none.trailers['grpc-message'], 'etcdserver: user name is empty');
    const wrong = await call(session, '/etcdserverpb.KV/Range', [frame(range)], { token: 'nope' });
    assert.equal(wrong.trailers['grpc-status'], '16');
    const right = await call(session, '/etcdserverpb.KV/Range', [frame(range)], { token: TOKEN });
    assert.equal(right.trailers['grpc-status'], '0');
    const twice = await call(session, '/etcdserverpb.KV/Range', [frame(range)], { token: [TOKEN, TOKEN] });
    assert.equal(twice.trailers['grpc-status'], '0');
  });
});
