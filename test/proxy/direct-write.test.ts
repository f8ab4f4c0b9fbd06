/**
 * direct-write.ts: strings written straight to a socket's handle keep what `socket.write()` gives —
 * order with the stream's own writes (queued, corked), back-pressure (false when the kernel's buffer
 * is full, `'drain'` when the writes that waited are done) and errors (`'error'` with the errno's code,
 * then `'close'`).
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { writeLatin1 } from '../../src/proxy/direct-write.js';

describe('proxy: direct socket writes', { timeout: 60_000 }, () => {
  let server: Server;
  let port = 0;
  const peers: ((s: Socket) => void)[] = [];

  before(async () => {
    server = createServer((s) => peers.shift()?.(s));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as { port: number }).port;
  });
  after(() => new Promise<void>((resolve) => server.close(() => resolve())));

  /** A connected client and the server's (paused) side of it. */
  async function pair(): Promise<{ client: Socket; peer: Socket }> {
    const got = new Promise<Socket>((resolve) => peers.push(resolve));
    const client = connect(port, '127.0.0.1');
    await once(client, 'connect');
    const peer = await got;
    peer.pause();
    return { client, peer };
  }

  /** Everything `peer` receives until the client ends. */
  async function readAll(peer: Socket): Promise<string> {
    let text = '';
    peer.setEncoding('latin1');
    peer.on('data', (d: string) => (text += d));
    peer.resume();
    await once(peer, 'end');
    return text;
  }

  test('in order with stream writes; false when full, then drain; nothing lost', async () => {
    const { client, peer } = await pair();
    let expected = '';
    const write = (s: string): boolean => {
      expected += s;
      return writeLatin1(client, s);
    };
    assert.equal(write('first\n'), true);
    // the stream's own writes, corked: the direct writes meanwhile go behind them
    client.cork();
    client.write('stream-1\n', 'latin1');
    expected += 'stream-1\n';
    write('direct-while-corked\n');
    client.uncork();
    // fill the kernel's buffers: a write that must wait returns false
    let i = 0;
    const block = 'x'.repeat(4000);
    while (write(`${i++}:${block}\n`)) if (i > 100_000) assert.fail('the socket never filled');
    // later writes wait behind it, direct or through the stream
    assert.equal(write('queued-direct\n'), false);
    assert.equal(client.write('queued-stream\n', 'latin1'), true);
    expected += 'queued-stream\n';
    const drained = once(client, 'drain');
    const all = readAll(peer);
    await drained;
    write('after-drain\n');
    client.end();
    assert.equal(await all, expected);
  });

  test('a write to a peer that is gone: error with the errno code, then close', async () => {
    const { client, peer } = await pair();
    peer.resetAndDestroy();
    const errors: Error[] = [];
    client.on('error', (e) => errors.push(e));
    const closed = new Promise((resolve) => client.once('close', resolve)); // (once() rejects on 'error')
    for (let i = 0; i < 100 && !client.destroyed; i++) {
      writeLatin1(client, 'x'.repeat(1000));
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    await closed;
    assert.equal(errors.length, 1);
    const code = (errors[0] as Error & { code?: string }).code ?? '';
    assert.ok(['EPIPE', 'ECONNRESET'].includes(code), `code ${code}`);
  });
});
