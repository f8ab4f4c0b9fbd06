/**
 * What a hostile (or broken) HTTP/2 peer can make serve's own HTTP/2 (src/server/grpc/h2.ts) hold,
 * each limit checked on a real socket with a raw client (raw-h2.ts): streams at once, the header
 * list, the HPACK table, CONTINUATION floods, rapid resets, PING / SETTINGS / empty DATA floods,
 * flow control both ways, frame sizes, the preface and first frame, a peer that does not read, and
 * what is left after a connection with half-open streams goes away.
 *
 * Two servers: muster serve itself (gRPC on the limits), and a bare H2Connection on a socket with an
 * echo handler and a manual clock (for the rate limits and the preface timer, and to see its state).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Etcd3 } from 'etcd3';
import { ManualClock } from '../../src/clock.js';
import {
  CONTROL_BURST,
  H2Connection,
  type H2Stream,
  MAX_CONCURRENT_STREAMS,
  MAX_CONTINUATIONS,
  MAX_HEADER_LIST,
  STREAM_QUEUE_LIMIT,
  CONNECTION_QUEUE_LIMIT,
  OUT_HIGH_WATER,
  PREFACE_TIMEOUT_MS,
  RESET_BURST,
  RESETS_PER_SECOND,
} from '../../src/server/grpc/h2.js';
import { etcdServices } from './etcd-proto.js';
import { type MusterServer, startServer } from '../../src/server/index.js';
import {
  E,
  F,
  frame,
  grpcMessage,
  grpcRequestHeaders,
  headerBlock,
  PREFACE,
  RawH2,
  settings,
  T,
  u32,
} from './raw-h2.js';

const kv = etcdServices().KV;
const putRequest = (key: string, value: Buffer): Buffer =>
  (kv.Put?.requestSerialize as (v: unknown) => Buffer)({ key: Buffer.from(key), value });
const rangeRequest = (key: string): Buffer =>
  (kv.Range?.requestSerialize as (v: unknown) => Buffer)({ key: Buffer.from(key) });
const rangeResponse = (b: Buffer): { kvs: { value: Buffer }[] } =>
  (kv.Range?.responseDeserialize as (b: Buffer) => never)(b);

/** A unary call on stream `id` of `c`, request and END_STREAM in one write. */
function unary(c: RawH2, id: number, path: string, body: Buffer, extra: [string, string][] = []): void {
  const msg = grpcMessage(body);
  // The header block in frames of at most 16 KiB: HEADERS, then CONTINUATIONs.
  const block = grpcRequestHeaders(path, extra);
  const frames: Buffer[] = [];
  for (let at = 0; at === 0 || at < block.length; at += 16_384) {
    const end = Math.min(block.length, at + 16_384);
    frames.push(
      frame(
        at === 0 ? T.HEADERS : T.CONTINUATION,
        end === block.length ? F.END_HEADERS : 0,
        id,
        block.subarray(at, end),
      ),
    );
  }
  for (let at = 0; at < msg.length; at += 16_384) {
    const end = Math.min(msg.length, at + 16_384);
    frames.push(frame(T.DATA, end === msg.length ? F.END_STREAM : 0, id, msg.subarray(at, end)));
  }
  c.send(...frames);
}

/** The bare connection server: every stream is answered with `answer` bytes once the client ends it. */
class Bare {
  readonly clock = new ManualClock();
  readonly connections: H2Connection[] = [];
  resets = 0;
  answer = Buffer.from('ok');
  #server: Server;
  port = 0;

  constructor() {
    this.#server = createServer((socket) => {
      const c = new H2Connection(
        socket,
        (s: H2Stream) => {
          s.onEnd = () => {
            s.write(this.answer);
            s.finish(0, '');
          };
          s.onReset = () => {
            this.resets++;
          };
          // '/flood': 80 × 1 MiB written at once, back-pressure ignored; '/big': one 20 MiB message.
          const path = s.headers[':path'];
          if (path === '/flood') for (let i = 0; i < 80 && !s.closed; i++) s.write(Buffer.alloc(1024 * 1024));
          if (path === '/big') s.write(Buffer.alloc(20 * 1024 * 1024));
          if (path === '/half')
            for (let i = 0; i < 2 && !s.closed; i++) s.write(Buffer.alloc(4.5 * 1024 * 1024));
        },
        () => undefined,
        this.clock,
      );
      this.connections.push(c);
    });
  }

  listen(): Promise<void> {
    return new Promise((resolve) =>
      this.#server.listen(0, '127.0.0.1', () => {
        this.port = (this.#server.address() as { port: number }).port;
        resolve();
      }),
    );
  }

  last(): H2Connection {
    return this.connections[this.connections.length - 1] as H2Connection;
  }

  close(): void {
    for (const c of this.connections) c.destroy();
    this.#server.close();
  }
}

async function until(check: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe('serve own HTTP/2: limits on a real socket', { timeout: 120_000 }, () => {
  let dir: string;
  let server: MusterServer;
  const bare = new Bare();

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'muster-h2-limits-'));
    server = await startServer({ dataDir: dir, listen: '127.0.0.1:0' });
    await bare.listen();
  });
  after(async () => {
    bare.close();
    await server?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('the server advertises its stream, header-list and window limits in its first SETTINGS', async () => {
    const c = await RawH2.open(server.port);
    const s = await c.next((f) => f.type === T.SETTINGS && (f.flags & F.ACK) === 0);
    assert.ok(s !== undefined);
    const values = new Map<number, number>();
    for (let p = 0; p < s.payload.length; p += 6)
      values.set(s.payload.readUInt16BE(p), s.payload.readUInt32BE(p + 2));
    assert.equal(values.get(3), MAX_CONCURRENT_STREAMS);
    assert.equal(values.get(6), MAX_HEADER_LIST);
    assert.equal(values.get(2), 0, 'no push');
    assert.ok((values.get(4) ?? 0) >= 65_535);
    c.close();
  });

  test('streams beyond MAX_CONCURRENT_STREAMS are refused (REFUSED_STREAM); the others go on', async () => {
    const c = await RawH2.open(server.port);
    const headers: Buffer[] = [];
    // Half-open Range calls: headers only, so each stays open.
    for (let i = 0; i <= MAX_CONCURRENT_STREAMS; i++) {
      headers.push(frame(T.HEADERS, F.END_HEADERS, 1 + 2 * i, grpcRequestHeaders('/etcdserverpb.KV/Range')));
    }
    c.send(...headers);
    const last = 1 + 2 * MAX_CONCURRENT_STREAMS;
    const refused = await c.next((f) => f.type === T.RST_STREAM && f.id === last);
    assert.equal(refused?.payload.readUInt32BE(0), E.REFUSED_STREAM);
    await c.ping();
    assert.equal(c.frames.filter((f) => f.type === T.RST_STREAM).length, 1, 'only the stream over the limit');
    // One of them finishes: a new stream is accepted and answered.
    const msg = grpcMessage(rangeRequest('/none'));
    c.send(frame(T.DATA, F.END_STREAM, 1, msg));
    assert.equal((await c.ended(1)).blocks.at(-1)?.['grpc-status'], '0');
    unary(c, last + 2, '/etcdserverpb.KV/Range', rangeRequest('/none'));
    assert.equal((await c.ended(last + 2)).blocks.at(-1)?.['grpc-status'], '0');
    c.close();
  });

  test('a real client (etcd3 on grpc-js, i.e. nghttp2) with 4 × MAX_CONCURRENT_STREAMS calls at once: it queues them, all succeed', async () => {
    const client = new Etcd3({ hosts: `127.0.0.1:${server.port}` });
    try {
      const n = 4 * MAX_CONCURRENT_STREAMS;
      const results = await Promise.allSettled(
        Array.from({ length: n }, (_, i) => client.put(`/many/${i}`).value('v').exec()),
      );
      assert.deepEqual(
        results.filter((r) => r.status === 'rejected').map((r) => String(r.reason)),
        [],
      );
      assert.equal(await client.getAll().prefix('/many/').count(), n);
    } finally {
      client.close();
    }
  });

  test('a header list over MAX_HEADER_LIST ends that call (RESOURCE_EXHAUSTED); the connection serves on', async () => {
    const c = await RawH2.open(server.port);
    unary(c, 1, '/etcdserverpb.KV/Range', rangeRequest('/none'), [['x-big', 'x'.repeat(MAX_HEADER_LIST)]]);
    const big = await c.ended(1);
    assert.equal(big.blocks[0]?.['grpc-status'], '8');
    assert.match(big.blocks[0]?.['grpc-message'] ?? '', /header list larger than/);
    // An HPACK bomb: one 4 KiB entry in the table, then a 200-byte block naming it 200 times.
    c.send(
      frame(
        T.HEADERS,
        F.END_HEADERS | F.END_STREAM,
        3,
        Buffer.concat([
          grpcRequestHeaders('/etcdserverpb.KV/Range'),
          headerBlock([['x-fill', 'y'.repeat(4000)]], true),
        ]),
      ),
    );
    await c.ended(3);
    c.send(
      frame(
        T.HEADERS,
        F.END_HEADERS | F.END_STREAM,
        5,
        Buffer.concat([grpcRequestHeaders('/etcdserverpb.KV/Range'), Buffer.alloc(200, 0xbe)]),
      ),
    );
    assert.equal((await c.ended(5)).blocks[0]?.['grpc-status'], '8');
    // The same connection still serves, and its HPACK table is in step.
    unary(c, 7, '/etcdserverpb.KV/Range', rangeRequest('/none'));
    assert.equal((await c.ended(7)).blocks.at(-1)?.['grpc-status'], '0');
    c.close();
  });

  test('CONTINUATION floods: a block over MAX_HEADER_BLOCK or in too many frames ends the connection (ENHANCE_YOUR_CALM)', async () => {
    const big = await RawH2.open(server.port);
    const frames = [frame(T.HEADERS, 0, 1, grpcRequestHeaders('/etcdserverpb.KV/Range'))];
    for (let i = 0; i < 5; i++) frames.push(frame(T.CONTINUATION, 0, 1, Buffer.alloc(16_384, 0x82)));
    big.send(...frames);
    assert.equal(await big.goaway(), E.ENHANCE_YOUR_CALM);
    await big.whenClosed();

    const many = await RawH2.open(server.port);
    const empty = [frame(T.HEADERS, 0, 1, grpcRequestHeaders('/etcdserverpb.KV/Range'))];
    for (let i = 0; i <= MAX_CONTINUATIONS; i++) empty.push(frame(T.CONTINUATION, 0, 1));
    many.send(...empty);
    assert.equal(await many.goaway(), E.ENHANCE_YOUR_CALM);
    await many.whenClosed();

    const table = await RawH2.open(server.port);
    // A dynamic table size update above SETTINGS_HEADER_TABLE_SIZE (4096).
    table.send(frame(T.HEADERS, F.END_HEADERS | F.END_STREAM, 1, Buffer.from([0x3f, 0xe2, 0x1f])));
    assert.equal(await table.goaway(), E.COMPRESSION_ERROR);
  });

  test('rapid reset: RESET_BURST resets pass, one more gets GOAWAY ENHANCE_YOUR_CALM; the budget refills with time', async () => {
    const c = await RawH2.open(bare.port);
    await c.ping();
    const conn = bare.last();
    const openAndReset = (from: number, n: number): void => {
      const frames: Buffer[] = [];
      for (let i = 0; i < n; i++) {
        const id = from + 2 * i;
        frames.push(
          frame(T.HEADERS, F.END_HEADERS, id, headerBlock([[':path', '/x']])),
          frame(T.RST_STREAM, 0, id, u32(E.CANCEL)),
        );
      }
      c.send(...frames);
    };
    const before = bare.resets;
    openAndReset(1, RESET_BURST);
    await c.ping();
    assert.equal(bare.resets - before, RESET_BURST, 'each reset reached its handler');
    assert.equal(conn.stats.streams, 0);
    bare.clock.advance(1000);
    openAndReset(1 + 2 * RESET_BURST, RESETS_PER_SECOND);
    await c.ping();
    assert.equal(
      c.frames.some((f) => f.type === T.GOAWAY),
      false,
      'within the refilled budget',
    );
    openAndReset(1 + 2 * (RESET_BURST + RESETS_PER_SECOND), 1);
    assert.equal(await c.goaway(), E.ENHANCE_YOUR_CALM);
    await c.whenClosed();
  });

  for (const [name, make] of [
    ['PING', () => frame(T.PING, 0, 0, Buffer.alloc(8))],
    ['SETTINGS', () => settings({ 4: 65_535 })],
    ['empty DATA', () => frame(T.DATA, 0, 1)],
    ['PRIORITY', () => frame(T.PRIORITY, 0, 1, Buffer.from([0, 0, 0, 0, 16]))],
    ['unknown-type', () => frame(0x42, 0, 0, Buffer.from('x'))],
  ] as const) {
    test(`${name} flood: CONTROL_BURST frames are answered, one more gets GOAWAY ENHANCE_YOUR_CALM`, async () => {
      const c = await RawH2.open(bare.port);
      // Stream 1 stays open for the DATA case.
      c.send(frame(T.HEADERS, F.END_HEADERS, 1, headerBlock([[':path', '/x']])));
      await c.ping();
      const one = make();
      // The SETTINGS and the two PINGs of the handshake and the check take a token each.
      c.send(Buffer.concat(Array.from({ length: CONTROL_BURST - 3 }, () => one)));
      await c.ping();
      assert.equal(
        c.frames.some((f) => f.type === T.GOAWAY),
        false,
      );
      c.send(one);
      assert.equal(await c.goaway(), E.ENHANCE_YOUR_CALM);
      await c.whenClosed();
    });
  }

  test('flow control: a 1.5 MiB answer waits for the client window; a 1.5 MiB request is taken whole, and WINDOW_UPDATEs follow', async () => {
    const value = Buffer.alloc(1_500_000, 7);
    const c = await RawH2.open(server.port, { settings: { 4: 1000 } });
    for (let i = 0; i < 6; i++) {
      unary(c, 1 + 2 * i, '/etcdserverpb.KV/Put', putRequest('/flow/big', value));
      assert.equal((await c.ended(1 + 2 * i)).blocks.at(-1)?.['grpc-status'], '0');
    }
    // 6 × 1.5 MiB > half the 16 MiB receive window: the connection window was replenished.
    assert.ok(
      c.frames.some((f) => f.type === T.WINDOW_UPDATE && f.id === 0 && f.payload.readUInt32BE(0) > 1_000_000),
    );
    unary(c, 13, '/etcdserverpb.KV/Range', rangeRequest('/flow/big'));
    await c.next((f) => f.type === T.DATA && f.id === 13);
    await c.ping();
    assert.equal(c.stream(13).data.length, 1000, 'no more than the stream window (1000 bytes)');
    // Open the window in steps: the answer arrives whole, in frames no larger than 16 KiB.
    const total = 5 + 1_500_000 + 100;
    for (let sent = 1000; !c.stream(13).ended; sent += 200_000) {
      c.send(frame(T.WINDOW_UPDATE, 0, 13, u32(200_000)), frame(T.WINDOW_UPDATE, 0, 0, u32(200_000)));
      await c.ping();
      assert.ok(c.stream(13).data.length <= sent + 200_000);
      assert.ok(sent < total + 400_000, 'the answer ends');
    }
    assert.ok(c.frames.every((f) => f.payload.length <= 16_384));
    const msg = c.stream(13).data;
    assert.equal(rangeResponse(msg.subarray(5, 5 + msg.readUInt32BE(1))).kvs[0]?.value.length, 1_500_000);
    c.close();
  });

  test('frame errors close the connection with GOAWAY and the right code', async () => {
    const cases: [string, Buffer, number][] = [
      ['frame over 16 KiB', frame(T.DATA, 0, 1, Buffer.alloc(16_385)), E.FRAME_SIZE_ERROR],
      ['PING of 7 bytes', frame(T.PING, 0, 0, Buffer.alloc(7)), E.FRAME_SIZE_ERROR],
      ['DATA on an idle stream', frame(T.DATA, 0, 9, Buffer.alloc(3)), E.PROTOCOL_ERROR],
      ['DATA on stream 0', frame(T.DATA, 0, 0, Buffer.alloc(3)), E.PROTOCOL_ERROR],
      [
        'HEADERS on an even stream',
        frame(T.HEADERS, F.END_HEADERS, 2, headerBlock([[':path', '/x']])),
        E.PROTOCOL_ERROR,
      ],
      ['PUSH_PROMISE', frame(T.PUSH_PROMISE, 0, 1, Buffer.alloc(4)), E.PROTOCOL_ERROR],
      ['RST_STREAM on an idle stream', frame(T.RST_STREAM, 0, 11, u32(8)), E.PROTOCOL_ERROR],
      ['WINDOW_UPDATE of 0', frame(T.WINDOW_UPDATE, 0, 0, u32(0)), E.PROTOCOL_ERROR],
      ['window over 2^31-1', frame(T.WINDOW_UPDATE, 0, 0, u32(2 ** 31 - 1)), E.FLOW_CONTROL_ERROR],
      [
        'padding longer than the frame',
        frame(T.HEADERS, F.END_HEADERS | F.PADDED, 1, Buffer.from([9, 0x82])),
        E.PROTOCOL_ERROR,
      ],
      ['empty padded DATA', frame(T.DATA, F.PADDED, 1), E.PROTOCOL_ERROR],
      [
        'bad HPACK index',
        frame(T.HEADERS, F.END_HEADERS, 1, Buffer.from([0xff, 0xff, 0x7f])),
        E.COMPRESSION_ERROR,
      ],
      ['SETTINGS ACK with a payload', frame(T.SETTINGS, F.ACK, 0, Buffer.alloc(6)), E.FRAME_SIZE_ERROR],
      ['MAX_FRAME_SIZE too small', settings({ 5: 100 }), E.PROTOCOL_ERROR],
    ];
    for (const [what, bytes, code] of cases) {
      const c = await RawH2.open(server.port);
      if (what.includes('padded DATA'))
        c.send(frame(T.HEADERS, F.END_HEADERS, 1, grpcRequestHeaders('/etcdserverpb.KV/Range')));
      c.send(bytes);
      assert.equal(await c.goaway().catch((e: Error) => assert.fail(`${what}: ${e.message}`)), code, what);
      await c.whenClosed();
    }
  });

  test('the preface and the first frame: anything else gets GOAWAY PROTOCOL_ERROR; silence is cut after PREFACE_TIMEOUT_MS', async () => {
    const wrong = await RawH2.open(bare.port, { preface: false });
    wrong.send(Buffer.from('PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n'));
    assert.equal(await wrong.goaway(), E.PROTOCOL_ERROR);
    await wrong.whenClosed();

    const first = await RawH2.open(bare.port, { preface: false });
    first.send(PREFACE, frame(T.PING, 0, 0, Buffer.alloc(8)));
    assert.equal(await first.goaway(), E.PROTOCOL_ERROR);
    await first.whenClosed();

    const silent = await RawH2.open(bare.port, { preface: false });
    silent.send(PREFACE.subarray(0, 10));
    await until(
      () => bare.connections.length > 0 && bare.last().stats.bufferedBytes === 10,
      'the partial preface',
    );
    bare.clock.advance(PREFACE_TIMEOUT_MS);
    assert.equal(await silent.goaway(), E.SETTINGS_TIMEOUT);
    await silent.whenClosed();
  });

  test('a peer that does not read: the server stops reading it, its queue stays bounded, and all is answered once it reads', async () => {
    bare.answer = Buffer.alloc(256 * 1024, 1);
    const c = await RawH2.open(bare.port, { settings: { 4: 2 ** 31 - 1 } });
    c.send(frame(T.WINDOW_UPDATE, 0, 0, u32(2 ** 31 - 1 - 65_535)));
    await c.ping();
    const conn = bare.last();
    c.socket.pause();
    const n = 400;
    for (let i = 0; i < n; i++) {
      c.send(frame(T.HEADERS, F.END_HEADERS | F.END_STREAM, 1 + 2 * i, headerBlock([[':path', '/x']])));
      await new Promise((r) => setImmediate(r));
    }
    await until(() => conn.stats.paused, 'the server to stop reading');
    await new Promise((r) => setTimeout(r, 200));
    const queued = conn.stats.queuedBytes;
    assert.ok(queued < OUT_HIGH_WATER + 16 * 1024 * 1024, `queued ${queued} bytes`);
    assert.ok(queued < (n * bare.answer.length) / 2, 'not every answer was queued');
    c.socket.resume();
    await c.ended(1 + 2 * (n - 1), 30_000);
    for (let i = 0; i < n; i++) assert.equal(c.stream(1 + 2 * i).data.length, bare.answer.length);
    assert.equal(conn.stats.paused, false);
    bare.answer = Buffer.from('ok');
    c.close();
  });

  test('a stream whose handler writes past back-pressure is reset (ENHANCE_YOUR_CALM) at STREAM_QUEUE_LIMIT queued, or CONNECTION_QUEUE_LIMIT on the connection; one large message is taken', async () => {
    // The client opens no window: everything the handlers write stays queued.
    const c = await RawH2.open(bare.port, { settings: { 4: 0 } });
    await c.ping();
    const conn = bare.last();
    const before = bare.resets;
    c.send(frame(T.HEADERS, F.END_HEADERS, 1, headerBlock([[':path', '/flood']])));
    const reset = await c.next((f) => f.type === T.RST_STREAM && f.id === 1);
    assert.equal(reset?.payload.readUInt32BE(0), E.ENHANCE_YOUR_CALM);
    assert.equal(bare.resets - before, 1, 'the handler saw the reset');
    c.send(frame(T.HEADERS, F.END_HEADERS, 3, headerBlock([[':path', '/big']])));
    await c.ping();
    assert.equal(c.stream(3).reset, undefined, 'one 20 MiB message is taken');
    assert.ok(conn.backlog() > STREAM_QUEUE_LIMIT);
    // 4.5 MiB twice on each of 12 streams: each stays under 16 MiB, the connection passes 64 MiB.
    const frames: Buffer[] = [];
    for (let i = 0; i < 12; i++)
      frames.push(frame(T.HEADERS, F.END_HEADERS, 5 + 2 * i, headerBlock([[':path', '/half']])));
    c.send(...frames);
    await c.ping();
    const cut = c.frames.filter((f) => f.type === T.RST_STREAM && f.id >= 5);
    assert.ok(cut.length > 0 && cut.length < 12, `${cut.length} streams cut`);
    assert.ok(conn.backlog() <= CONNECTION_QUEUE_LIMIT + 20 * 1024 * 1024);
    c.close();
  });

  test('a peer with open windows that does not read: a stream writing past back-pressure is reset once the socket holds CONNECTION_QUEUE_LIMIT', async () => {
    const c = await RawH2.open(bare.port, { settings: { 4: 2 ** 31 - 1 } });
    c.send(frame(T.WINDOW_UPDATE, 0, 0, u32(2 ** 31 - 1 - 65_535)));
    await c.ping();
    const conn = bare.last();
    c.socket.pause();
    c.send(frame(T.HEADERS, F.END_HEADERS, 1, headerBlock([[':path', '/flood']])));
    await until(() => conn.stats.streams === 0, 'the flooding stream to be reset');
    assert.ok(conn.backlog() <= CONNECTION_QUEUE_LIMIT + 1024 * 1024, `backlog ${conn.backlog()}`);
    c.socket.resume();
    const reset = await c.next((f) => f.type === T.RST_STREAM && f.id === 1, 0, 30_000);
    assert.equal(reset?.payload.readUInt32BE(0), E.ENHANCE_YOUR_CALM);
    c.close();
  });

  test('half-open streams and an idle connection leave nothing behind when the peer goes away', async () => {
    const c = await RawH2.open(bare.port);
    const frames: Buffer[] = [];
    for (let i = 0; i < 100; i++)
      frames.push(frame(T.HEADERS, F.END_HEADERS, 1 + 2 * i, headerBlock([[':path', '/x']])));
    // Half a frame left in the server's buffer, too.
    frames.push(frame(T.DATA, 0, 1, Buffer.alloc(1000)).subarray(0, 500));
    c.send(...frames);
    const conn = bare.last();
    await until(() => conn.stats.streams === 100 && conn.stats.bufferedBytes === 500, 'the streams');
    const before = bare.resets;
    c.close();
    await until(() => conn.closed, 'the connection to close');
    assert.equal(conn.stats.streams, 0);
    assert.equal(conn.stats.bufferedBytes, 0);
    assert.equal(bare.resets - before, 100, 'each open stream was reset (its handler cleaned up)');
  });
});
