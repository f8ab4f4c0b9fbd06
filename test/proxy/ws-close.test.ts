/**
 * WebSockets through the proxy get close code 1012 (Service Restart) when their key's owner changes
 * and when the worker drains (a reload), sent at a frame boundary (never inside a frame); the backend
 * gets 1001 (Going Away).
 */
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { startProxy } from '../../src/proxy/index.js';
import { FrameBoundary, closeFrame } from '../../src/proxy/ws-close.js';
import { openMemoryStore, type MemoryStore } from '../../src/store/index.js';
import { waitFor } from '../../src/testing/index.js';
import { startBackend, testConfig, type Backend } from './helpers.js';

const SVC = '/muster/services/wsc/';

/** A frame header for an unmasked text frame of `n` bytes. */
function textHeader(n: number): Buffer {
  return n < 126 ? Buffer.from([0x81, n]) : Buffer.from([0x81, 126, n >> 8, n & 0xff]);
}

interface WsBackend extends Backend {
  /** The upgraded sockets, newest last. */
  readonly upgraded: Duplex[];
  /** Bytes each upgraded socket received from the proxy after the request head. */
  readonly received: Buffer[][];
}

async function wsBackend(name: string): Promise<WsBackend> {
  const be = (await startBackend(name)) as WsBackend;
  Object.assign(be, { upgraded: [], received: [] });
  be.server.on('upgrade', (_req, socket: Duplex) => {
    const got: Buffer[] = [];
    be.upgraded.push(socket);
    be.received.push(got);
    socket.on('data', (b: Buffer) => got.push(b));
    socket.on('error', () => undefined);
    socket.on('end', () => socket.end()); // the HTTP server's sockets allow half-open ones
    socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n');
    // the first half of a 1,000-byte frame: the proxy may not close before its second half
    socket.write(Buffer.concat([textHeader(1000), Buffer.alloc(500, 0x61)]));
  });
  return be;
}

/** Opens a WebSocket through the proxy; collects everything after the 101 head. */
function open(
  address: string,
  key: string,
): Promise<{ socket: Socket; body: () => Buffer; closed: Promise<void> }> {
  const [host, port] = address.split(':') as [string, string];
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    let headDone = false;
    const socket = connect(Number(port), host, () =>
      socket.write(
        `GET /ws HTTP/1.1\r\nHost: h\r\nx-key: ${key}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`,
      ),
    );
    const closed = new Promise<void>((r) => socket.once('close', () => r()));
    socket.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (headDone) return;
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      headDone = true;
      const head = buf.subarray(0, end).toString();
      buf = buf.subarray(end + 4);
      if (!head.startsWith('HTTP/1.1 101')) return reject(new Error(head));
      resolve({ socket, body: () => buf, closed });
    });
    socket.on('error', reject);
  });
}

/** The close code of a close frame at the end of `b` (unmasked, 2-byte payload). */
function closeCodeAtEnd(b: Buffer): number | undefined {
  const f = b.subarray(b.length - 4);
  return f[0] === 0x88 && f[1] === 2 ? f.readUInt16BE(2) : undefined;
}

describe('proxy: WebSocket close code 1012 on a move and on drain', { timeout: 30_000 }, () => {
  let store: MemoryStore;
  let a: WsBackend;
  let b: WsBackend;

  before(async () => {
    store = openMemoryStore();
    a = await wsBackend('a');
    b = await wsBackend('b');
    await store.put(`${SVC}spec`, JSON.stringify({ partitions: 1 }));
  });
  after(async () => {
    for (const s of [...a.upgraded, ...b.upgraded]) s.destroy();
    await a.close();
    await b.close();
    await store.close();
  });

  test('frame boundaries are found across any split; a close frame carries its code', () => {
    const frames = Buffer.concat([
      textHeader(3),
      Buffer.from('abc'),
      textHeader(300),
      Buffer.alloc(300),
      closeFrame(1001, true),
    ]);
    const ends = [5, 5 + 4 + 300, frames.length];
    for (let split = 1; split < frames.length; split++) {
      const f = new FrameBoundary();
      assert.equal(f.feed(frames.subarray(0, split)), -1);
      assert.equal(f.atBoundary, ends.includes(split), `boundary at ${split}`);
      // closing now: the first boundary at or after the split
      const next = ends.find((e) => e >= split) as number;
      assert.equal(f.feed(frames.subarray(split), true), next - split, `next boundary after ${split}`);
    }
    assert.deepEqual([...closeFrame(1012, false)], [0x88, 2, 0x03, 0xf4]);
  });

  test("the key's owner changes: the client gets the frame in flight whole, then 1012; the backend 1001", async () => {
    await store.put(`${SVC}owners/0`, JSON.stringify({ instance: 'a', since: '', address: a.address }));
    const proxy = await startProxy({ store, config: testConfig('wsc') });
    try {
      const ws = await open(proxy.addresses[0] as string, 'k1');
      await waitFor(() => ws.body().length >= 504, { what: 'the first half of the frame' });
      await store.put(`${SVC}owners/0`, JSON.stringify({ instance: 'b', since: '', address: b.address }));
      await waitFor(() => proxy.source.owners.get('0')?.instance === 'b', { what: 'the move seen' });
      // the proxy is waiting for the frame's end: send the second half
      a.upgraded.at(-1)?.write(Buffer.alloc(500, 0x62));
      await ws.closed;
      const body = ws.body();
      assert.equal(body.length, 4 + 1000 + 4, 'the whole frame, then the close frame, nothing else');
      assert.equal(closeCodeAtEnd(body), 1012);
      await waitFor(() => Buffer.concat(a.received.at(-1) ?? []).length >= 8, { what: 'close to backend' });
      const toBackend = Buffer.concat(a.received.at(-1) ?? []);
      assert.equal(toBackend[0], 0x88, 'a close frame');
      const key = toBackend.subarray(2, 6);
      assert.equal(
        ((toBackend[6] as number) ^ (key[0] as number)) * 256 +
          ((toBackend[7] as number) ^ (key[1] as number)),
        1001,
      );
    } finally {
      await proxy.close();
    }
  });

  test('drain (a reload): open WebSockets get 1012 and the worker finishes its drain', async () => {
    await store.put(`${SVC}owners/0`, JSON.stringify({ instance: 'b', since: '', address: b.address }));
    const proxy = await startProxy({ store, config: testConfig('wsc') });
    const ws = await open(proxy.addresses[0] as string, 'k2');
    await waitFor(() => ws.body().length >= 504, { what: 'the first half of the frame' });
    const drained = proxy.drain(20_000);
    b.upgraded.at(-1)?.write(Buffer.alloc(500, 0x62));
    await ws.closed;
    assert.equal(closeCodeAtEnd(ws.body()), 1012);
    assert.equal(ws.body().length, 4 + 1000 + 4);
    await drained;
  });
});
