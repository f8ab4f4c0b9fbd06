/**
 * A fuzz of serve's own HTTP/2 (src/server/grpc/h2.ts) and its HPACK decoder (hpack.ts): random
 * bytes, and mutations of what real clients sent — Node's HTTP/2 client (nghttp2) and etcdctl
 * (grpc-go), recorded by a proxy in front of muster serve. What must hold, for every input: no
 * exception escapes (the HPACK decoder throws only its own H2Error; the connection never throws out
 * of a socket event, or this process would die), no hang (each input is bounded in time, and a
 * connection whose input ended is closed), and the server keeps serving other connections.
 * Iterations are bounded and seeded (the seed is printed with any failure).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect as h2connect, type ClientHttp2Session } from 'node:http2';
import { connect, createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Duplex } from 'node:stream';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';
import { H2Connection, type H2Stream } from '../../src/server/grpc/h2.js';
import { CODES, H2Error, HpackDecoder, huffmanDecode, LENGTHS } from '../../src/server/grpc/hpack.js';
import { etcdServices } from './etcd-proto.js';
import { type MusterServer, startServer } from '../../src/server/index.js';
import { ETCD_INSTALL_HINT, needBinary, seededRandom } from '../../src/testing/index.js';
import { PREFACE } from './raw-h2.js';

const SEED = Number(process.env.MUSTER_FUZZ_SEED ?? Date.now() % 1_000_000);

class Fuzzer {
  readonly #r: () => number;
  constructor(seed: number) {
    this.#r = seededRandom(seed);
  }
  int(n: number): number {
    return Math.floor(this.#r() * n);
  }
  bytes(n: number): Buffer {
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i++) b[i] = this.int(256);
    return b;
  }
  /** One to four random edits of `input`. */
  mutate(input: Buffer, donors: readonly Buffer[]): Buffer {
    let b = Buffer.from(input);
    for (let k = 1 + this.int(4); k > 0; k--) {
      const at = this.int(Math.max(1, b.length));
      switch (this.int(8)) {
        case 0: // flip bits
          if (b.length > 0) b[at] = (b[at] as number) ^ (1 << this.int(8));
          break;
        case 1: // overwrite with an interesting value
          if (b.length > 0) b[at] = [0, 0xff, 0x7f, 0x80, 0x01, 0x3f, 0x40][this.int(7)] as number;
          break;
        case 2: // insert random bytes
          b = Buffer.concat([b.subarray(0, at), this.bytes(1 + this.int(16)), b.subarray(at)]);
          break;
        case 3: // delete a range
          b = Buffer.concat([b.subarray(0, at), b.subarray(at + 1 + this.int(32))]);
          break;
        case 4: // duplicate a range
          b = Buffer.concat([b.subarray(0, at + 64), b.subarray(at, at + 64), b.subarray(at + 64)]);
          break;
        case 5: // truncate
          b = b.subarray(0, at);
          break;
        case 6: {
          // splice in a piece of another capture
          const d = donors[this.int(donors.length)] as Buffer;
          const from = this.int(Math.max(1, d.length));
          b = Buffer.concat([b.subarray(0, at), d.subarray(from, from + 1 + this.int(200)), b.subarray(at)]);
          break;
        }
        default: // a 32-bit field to an extreme
          if (b.length >= at + 4)
            b.writeUInt32BE([0, 0x7fffffff, 0xffffffff, 1, 16_384][this.int(5)] as number, at);
      }
    }
    return b;
  }
}

interface Frame {
  type: number;
  flags: number;
  id: number;
  payload: Buffer;
}

/** The frames of a client's byte stream (after the preface). */
function framesOf(bytes: Buffer): Frame[] {
  const out: Frame[] = [];
  let b = bytes.subarray(PREFACE.length);
  while (b.length >= 9) {
    const n = b.readUIntBE(0, 3);
    if (b.length < 9 + n) break;
    out.push({
      type: b[3] as number,
      flags: b[4] as number,
      id: b.readUInt32BE(5),
      payload: b.subarray(9, 9 + n),
    });
    b = b.subarray(9 + n);
  }
  return out;
}

/** Records what clients send to `port` through a proxy; `captures` gets one buffer per connection. */
function recordingProxy(port: number, captures: Buffer[]): Promise<Server> {
  const proxy = createServer((client) => {
    const chunks: Buffer[] = [];
    const upstream = connect(port, '127.0.0.1');
    client.on('data', (c: Buffer) => {
      chunks.push(c);
      upstream.write(c);
    });
    upstream.pipe(client);
    const done = (): void => {
      if (chunks.length > 0) captures.push(Buffer.concat(chunks));
      chunks.length = 0;
      client.destroy();
      upstream.destroy();
    };
    client.on('close', done);
    upstream.on('close', done);
    client.on('error', () => undefined);
    upstream.on('error', () => undefined);
  });
  return new Promise((resolve) => proxy.listen(0, '127.0.0.1', () => resolve(proxy)));
}

/** A socket-like duplex for feeding bytes to an H2Connection in this process. */
function fakeSocket(): { socket: Duplex; written: () => number } {
  let n = 0;
  const socket = new Duplex({
    read() {},
    write(chunk: Buffer, _enc, cb) {
      n += chunk.length;
      cb();
    },
  });
  return { socket, written: () => n };
}

const kv = etcdServices().KV;
const grpcFrame = (body: Buffer): Buffer => {
  const out = Buffer.alloc(5 + body.length);
  out.writeUInt32BE(body.length, 1);
  body.copy(out, 5);
  return out;
};

function unaryCall(session: ClientHttp2Session, path: string, body: Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = session.request({
      ':method': 'POST',
      ':path': path,
      'content-type': 'application/grpc',
      te: 'trailers',
    });
    let status = '';
    s.on('response', (h) => {
      if (h['grpc-status'] !== undefined) status = String(h['grpc-status']);
    });
    s.on('trailers', (t) => {
      status = String(t['grpc-status']);
    });
    s.on('data', () => undefined);
    s.on('end', () => resolve(status));
    s.on('error', reject);
    s.end(grpcFrame(body));
  });
}

describe(
  `serve own HTTP/2: fuzz of the frame and HPACK decoders (seed ${SEED})`,
  { timeout: 240_000 },
  () => {
    let dir: string;
    let server: MusterServer;
    const captures: Buffer[] = [];

    before(async () => {
      dir = mkdtempSync(join(tmpdir(), 'muster-h2-fuzz-'));
      server = await startServer({ dataDir: dir, listen: '127.0.0.1:0' });
      const proxy = await recordingProxy(server.port, captures);
      const port = (proxy.address() as { port: number }).port;
      // nghttp2, through Node's client: puts, ranges (one large), a watch, a lease.
      const session = h2connect(`http://127.0.0.1:${port}`);
      const put = (key: string, value: Buffer): Buffer =>
        (kv.Put?.requestSerialize as (v: unknown) => Buffer)({ key: Buffer.from(key), value });
      await unaryCall(session, '/etcdserverpb.KV/Put', put('/fuzz/a', Buffer.from('1')));
      await unaryCall(session, '/etcdserverpb.KV/Put', put('/fuzz/big', Buffer.alloc(40_000, 3)));
      await unaryCall(
        session,
        '/etcdserverpb.KV/Range',
        (kv.Range?.requestSerialize as (v: unknown) => Buffer)({ key: Buffer.from('/fuzz/big') }),
      );
      const lease = etcdServices().Lease.LeaseGrant?.requestSerialize as (v: unknown) => Buffer;
      await unaryCall(session, '/etcdserverpb.Lease/LeaseGrant', lease({ TTL: 10 }));
      const watch = session.request({
        ':method': 'POST',
        ':path': '/etcdserverpb.Watch/Watch',
        'content-type': 'application/grpc',
        te: 'trailers',
      });
      const create = etcdServices().Watch.Watch?.requestSerialize as (v: unknown) => Buffer;
      watch.write(
        grpcFrame(
          create({ create_request: { key: Buffer.from('/fuzz/'), range_end: Buffer.from('/fuzz0') } }),
        ),
      );
      await new Promise((r) => watch.once('data', r));
      watch.close();
      await new Promise<void>((r) => session.close(() => r()));
      // grpc-go, through etcdctl, when it is installed.
      if (needBinary('etcdctl', ETCD_INSTALL_HINT) === false) {
        const run = (...args: string[]): Promise<unknown> =>
          promisify(execFile)('etcdctl', ['--endpoints', `127.0.0.1:${port}`, ...args], {
            timeout: 30_000,
            env: { ...process.env, ETCDCTL_API: '3' },
          });
        await run('put', '/fuzz/ctl', 'v');
        await run('get', '/fuzz/', '--prefix');
        await run('lease', 'grant', '10');
        await run('del', '/fuzz/ctl');
      }
      await new Promise<void>((r) => setTimeout(r, 100));
      proxy.close();
      assert.ok(
        captures.length >= (needBinary('etcdctl', ETCD_INSTALL_HINT) === false ? 4 : 1),
        `captured ${captures.length} client connections`,
      );
    });
    after(async () => {
      await server?.close();
      rmSync(dir, { recursive: true, force: true });
    });

    test('Huffman decoder: the same answers as a bit-by-bit reference, on encoded and random strings; 60 KB in milliseconds', () => {
      // The reference: RFC 7541 Appendix B read one bit at a time.
      const bySize = new Map<string, number>(CODES.map((c, sym) => [`${LENGTHS[sym]}:${c}`, sym]));
      const reference = (bytes: Buffer): Buffer | undefined => {
        const out: number[] = [];
        let code = 0;
        let len = 0;
        for (const byte of bytes) {
          for (let bit = 7; bit >= 0; bit--) {
            code = code * 2 + ((byte >> bit) & 1);
            len++;
            const sym = bySize.get(`${len}:${code}`);
            if (sym === 256) return undefined;
            if (sym !== undefined) {
              out.push(sym);
              code = 0;
              len = 0;
            }
          }
        }
        return len < 8 && code === 2 ** len - 1 ? Buffer.from(out) : undefined;
      };
      const encode = (text: Buffer): Buffer => {
        let bits = '';
        for (const b of text) bits += (CODES[b] as number).toString(2).padStart(LENGTHS[b] as number, '0');
        bits += '1'.repeat((8 - (bits.length % 8)) % 8);
        return Buffer.from(bits.match(/.{8}/g)?.map((x) => parseInt(x, 2)) ?? []);
      };
      const f = new Fuzzer(SEED + 3);
      for (let i = 0; i < 20_000; i++) {
        const text = f.bytes(f.int(40));
        const encoded = encode(text);
        assert.deepEqual(huffmanDecode(encoded), text, `seed ${SEED + 3}: ${encoded.toString('hex')}`);
        const random = i % 2 === 0 ? f.bytes(f.int(12)) : f.mutate(encoded, [encoded]);
        assert.deepEqual(
          huffmanDecode(random),
          reference(random),
          `seed ${SEED + 3}: ${random.toString('hex')}`,
        );
      }
      const big = encode(Buffer.alloc(60_000, 'a'));
      const t0 = performance.now();
      assert.equal(huffmanDecode(big)?.length, 60_000);
      assert.ok(performance.now() - t0 < 50, 'a bit-by-bit decoder took about 40 ms for this');
    });

    test('HPACK decoder: random blocks and mutated captured blocks decode or throw H2Error, quickly', () => {
      const f = new Fuzzer(SEED);
      const blocks = captures.flatMap((c) =>
        framesOf(c)
          .filter((x) => x.type === 1)
          .map((x) => x.payload),
      );
      assert.ok(blocks.length > 0);
      let threw = 0;
      const started = Date.now();
      for (let i = 0; i < 20_000; i++) {
        const d = new HpackDecoder();
        // Warm the table with a real block first, half the time.
        if (i % 2 === 0) {
          try {
            d.decode(blocks[f.int(blocks.length)] as Buffer);
          } catch {
            // a captured block that refers to an earlier one's entries
          }
        }
        const input =
          i % 4 === 0 ? f.bytes(f.int(300)) : f.mutate(blocks[f.int(blocks.length)] as Buffer, blocks);
        const t0 = Date.now();
        try {
          const out = d.decode(input, 16 * 1024);
          assert.ok(out === undefined || typeof out === 'object');
        } catch (e) {
          assert.ok(e instanceof H2Error, `seed ${SEED} input ${input.toString('hex')}: ${String(e)}`);
          threw++;
        }
        assert.ok(Date.now() - t0 < 500, `seed ${SEED}: slow input ${input.toString('hex')}`);
      }
      assert.ok(threw > 0 && threw < 20_000);
      assert.ok(Date.now() - started < 60_000);
    });

    test('frame decoder in-process: random and mutated client streams, split at random, never throw and end closed', async () => {
      const f = new Fuzzer(SEED + 1);
      for (let i = 0; i < 10_000; i++) {
        const { socket } = fakeSocket();
        const streams: H2Stream[] = [];
        const conn = new H2Connection(
          socket,
          (s) => {
            streams.push(s);
            s.onData = () => undefined;
            s.onEnd = () => {
              s.write(Buffer.from('answer'));
              s.finish(f.int(2) === 0 ? 0 : 13, 'x');
            };
          },
          () => undefined,
        );
        const base = captures[f.int(captures.length)] as Buffer;
        const input =
          i % 5 === 0
            ? Buffer.concat([PREFACE, f.bytes(f.int(2000))])
            : i % 5 === 1
              ? f.bytes(f.int(500))
              : f.mutate(base, captures);
        const t0 = Date.now();
        for (let at = 0; at < input.length;) {
          const n = 1 + f.int(f.int(2) === 0 ? 64 : 20_000);
          socket.push(input.subarray(at, at + n));
          at += n;
        }
        socket.push(null);
        await new Promise((r) => setImmediate(r));
        await new Promise((r) => setImmediate(r));
        assert.ok(Date.now() - t0 < 2000, `seed ${SEED + 1} iteration ${i}: slow`);
        assert.ok(conn.closed, `seed ${SEED + 1} iteration ${i}: not closed after the input ended`);
        assert.equal(conn.stats.streams, 0);
        conn.destroy();
      }
    });

    test('frame decoder on real sockets: mutated captures sent to muster serve; it closes each, and serves the others', async () => {
      const f = new Fuzzer(SEED + 2);
      const healthy = h2connect(`http://127.0.0.1:${server.port}`);
      const range = (kv.Range?.requestSerialize as (v: unknown) => Buffer)({ key: Buffer.from('/fuzz/a') });
      const one = (input: Buffer): Promise<void> =>
        new Promise((resolve, reject) => {
          const s = connect({ port: server.port, host: '127.0.0.1', noDelay: true }, () => {
            s.write(input);
            s.end();
          });
          const timer = setTimeout(
            () => reject(new Error(`seed ${SEED + 2}: no close for ${input.toString('hex').slice(0, 400)}`)),
            10_000,
          );
          s.on('data', () => undefined);
          s.on('error', () => undefined);
          s.on('close', () => {
            clearTimeout(timer);
            resolve();
          });
        });
      for (let round = 0; round < 100; round++) {
        const batch: Promise<void>[] = [];
        for (let k = 0; k < 16; k++) {
          const base = captures[f.int(captures.length)] as Buffer;
          batch.push(
            one(round % 8 === 0 ? Buffer.concat([PREFACE, f.bytes(f.int(3000))]) : f.mutate(base, captures)),
          );
        }
        await Promise.all(batch);
        assert.equal(await unaryCall(healthy, '/etcdserverpb.KV/Range', range), '0', 'the server serves on');
      }
      healthy.close();
    });
  },
);
