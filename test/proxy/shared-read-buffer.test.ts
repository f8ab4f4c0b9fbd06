/**
 * The client sockets read into one buffer the process shares (src/proxy/accept.ts): every read
 * overwrites the bytes of the one before. What must survive a read is kept by a copy — a header
 * split across reads (llhttp saves the partial strings), a request body the upstream exchange has not
 * asked for yet, the bytes that came with an upgrade head, a tunnel's bytes. Each test here sends
 * bytes in the splits that would show a view kept past its read.
 */
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { startProxy, type Proxy } from '../../src/proxy/index.js';
import { openMemoryStore, type MemoryStore } from '../../src/store/index.js';
import { ownOnePartition, startBackend, testConfig, type Backend } from './helpers.js';

const SVC = '/muster/services/shared/';

function open(address: string): Promise<Socket> {
  const i = address.lastIndexOf(':');
  return new Promise((resolve, reject) => {
    const s = connect(Number(address.slice(i + 1)), address.slice(0, i), () => resolve(s));
    s.setNoDelay(true);
    s.once('error', reject);
  });
}

/** Writes `bytes` in pieces of `size`, each handed to the kernel (and a timer turn) before the next. */
async function dribble(s: Socket, bytes: Buffer, size: number): Promise<void> {
  for (let i = 0; i < bytes.length; i += size) {
    await new Promise<void>((resolve) => s.write(bytes.subarray(i, i + size), () => resolve()));
    await new Promise<void>((resolve) => setTimeout(resolve, 1));
  }
}

/** Reads until `done(all bytes so far)` is true; resolves to the bytes. */
function readUntil(s: Socket, done: (all: Buffer) => boolean): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const onData = (d: Buffer): void => {
      chunks.push(d);
      const all = Buffer.concat(chunks);
      if (done(all)) {
        s.off('data', onData);
        resolve(all);
      }
    };
    s.on('data', onData);
    s.once('error', reject);
    s.once('close', () => reject(new Error(`closed after ${Buffer.concat(chunks).length} bytes`)));
  });
}

/** Bytes 0..250 repeated: a misplaced or overwritten piece shows. */
function pattern(n: number, offset = 0): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = (i + offset) % 251;
  return b;
}

/** The bodies of the complete responses in `all` (Content-Length or chunked). */
function bodies(all: Buffer): string[] {
  const out: string[] = [];
  let text = all.toString('latin1');
  for (;;) {
    const end = text.indexOf('\r\n\r\n');
    if (end < 0) return out;
    const head = text.slice(0, end);
    let pos = end + 4;
    let body = '';
    if (/transfer-encoding: chunked/i.test(head)) {
      for (;;) {
        const eol = text.indexOf('\r\n', pos);
        if (eol < 0) return out;
        const n = parseInt(text.slice(pos, eol), 16);
        if (text.length < eol + 2 + n + 2) return out;
        body += text.slice(eol + 2, eol + 2 + n);
        pos = eol + 2 + n + 2;
        if (n === 0) break;
      }
    } else {
      const n = Number(/content-length: (\d+)/i.exec(head)?.[1] ?? 0);
      if (text.length < pos + n) return out;
      body = text.slice(pos, pos + n);
      pos += n;
    }
    out.push(body);
    text = text.slice(pos);
  }
}

describe('proxy: the shared client read buffer', { timeout: 60_000 }, () => {
  let store: MemoryStore;
  let proxy: Proxy;
  let backend: Backend;
  let tunnels: Backend;

  before(async () => {
    store = openMemoryStore();
    backend = await startBackend('a');
    tunnels = await startBackend('t');
    tunnels.server.on('upgrade', (_req, socket, head: Buffer) => {
      socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n');
      socket.write(head); // (what node:http read with the head)
      socket.pipe(socket);
    });
    await ownOnePartition(store, 'shared', 'a', backend.address);
    await store.put(`${SVC}instances/t`, JSON.stringify({ id: 't', address: tunnels.address }));
    await store.put(`${SVC}routes/tunnel`, JSON.stringify({ instance: 't' }));
    proxy = await startProxy({ store, config: testConfig('shared') });
  });
  after(async () => {
    await proxy.close();
    await backend.close();
    await tunnels.close();
    await store.close();
  });

  test('heads and bodies that arrive a few bytes per read, pipelined, reach the backend intact', async () => {
    const s = await open(proxy.addresses[0] as string);
    const long = 'v'.repeat(3000);
    const body = 'abcdefghijklmnopqrstuvwxyz0123456789'.repeat(600); // 21,600 bytes
    const bytes = Buffer.from(
      `GET /first HTTP/1.1\r\nHost: h\r\nX-Key: k1\r\nX-Long: ${long}\r\nX-Split-Name-Here: one\r\n\r\n` +
        `POST /echo HTTP/1.1\r\nHost: h\r\nX-Key: k1\r\nContent-Length: ${body.length}\r\n\r\n${body}` +
        `GET /third HTTP/1.1\r\nHost: h\r\nX-Key: k1\r\nConnection: close\r\n\r\n`,
      'latin1',
    );
    const answered = readUntil(s, (all) => bodies(all).length === 3);
    await dribble(s, bytes.subarray(0, 4000), 7); // the heads a few bytes at a time
    await dribble(s, bytes.subarray(4000), 1500); // the body and the last head in bigger pieces
    const [first, echo, third] = bodies(await answered).map(
      (b) => JSON.parse(b) as { path: string; headers: Record<string, string>; body?: string },
    );
    s.destroy();
    assert.equal(first?.path, '/first');
    assert.equal(first?.headers['x-long'], long);
    assert.equal(first?.headers['x-split-name-here'], 'one');
    assert.equal(echo?.path, '/echo');
    assert.equal(echo?.body, body);
    assert.equal(third?.path, '/third');
  });

  test('bytes sent with an upgrade head, then 2 MiB, come back whole through three tunnels at once', async () => {
    // three connections read into the same buffer meanwhile: a view kept past its read (queued on a
    // full upstream socket, or waiting for the upstream connection) would carry another one's bytes
    const tunnel = async (n: number): Promise<void> => {
      const s = await open(proxy.addresses[0] as string);
      const early = pattern(1000 + n, 7 * n);
      const late = pattern(2 * 1024 * 1024, 3 * n + 1);
      const head =
        'GET /t HTTP/1.1\r\nHost: h\r\nX-Key: tunnel\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n';
      const want = Buffer.concat([early, late]);
      const got = readUntil(s, (all) => {
        const end = all.indexOf('\r\n\r\n');
        return end >= 0 && all.length - end - 4 >= want.length;
      });
      s.write(Buffer.concat([Buffer.from(head), early])); // the head and the tunnel's first bytes in one write
      s.write(late);
      const all = await got;
      s.destroy();
      const end = all.indexOf('\r\n\r\n');
      assert.match(all.subarray(0, end).toString(), /^HTTP\/1\.1 101/);
      assert.ok(
        all.subarray(end + 4).equals(want),
        `tunnel ${n}: the echoed bytes differ from the bytes sent`,
      );
    };
    await Promise.all([tunnel(1), tunnel(2), tunnel(3)]);
  });
});
