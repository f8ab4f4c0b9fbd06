import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { startFaultProxy } from '../../src/testing/index.js';

/** Reads from `socket` until `n` bytes arrived or `timeoutMs` passed; returns what arrived. */
function readBytes(socket: Socket, n: number, timeoutMs: number): Promise<string> {
  return new Promise((resolve) => {
    let got = '';
    const finish = (): void => {
      clearTimeout(timer);
      socket.off('data', onData);
      resolve(got);
    };
    const onData = (chunk: Buffer): void => {
      got += chunk.toString();
      if (got.length >= n) finish();
    };
    const timer = setTimeout(finish, timeoutMs);
    socket.on('data', onData);
  });
}

describe('fault proxy', () => {
  let echo: Server;
  let target: string;
  before(async () => {
    echo = createServer((s) => {
      s.on('error', () => undefined);
      s.pipe(s);
    });
    echo.listen(0, '127.0.0.1');
    await once(echo, 'listening');
    const a = echo.address();
    target = `127.0.0.1:${typeof a === 'object' && a !== null ? a.port : 0}`;
  });
  after(() => {
    echo.close();
  });

  async function client(endpoint: string): Promise<Socket> {
    const [host, port] = endpoint.split(':');
    const s = connect({ host: host as string, port: Number(port) });
    await once(s, 'connect');
    return s;
  }

  test('passes, delays, pauses, black-holes and cuts', { timeout: 30_000 }, async () => {
    await using proxy = await startFaultProxy({ target });
    const s = await client(proxy.endpoint);

    s.write('hello');
    assert.equal(await readBytes(s, 5, 2000), 'hello');

    proxy.delay(150, 'toServer');
    let t = performance.now();
    s.write('slow!');
    assert.equal(await readBytes(s, 5, 2000), 'slow!');
    assert.ok(performance.now() - t >= 140, 'delay applied');

    proxy.pass();
    proxy.pause('toClient');
    s.write('held');
    assert.equal(await readBytes(s, 4, 200), '', 'paused direction holds bytes');
    t = performance.now();
    const released = readBytes(s, 4, 2000);
    proxy.pass('toClient');
    assert.equal(await released, 'held', 'held bytes flow in order once passed');

    // A connection that stays idle while the link is dark carries on; one that lost bytes is reset
    // when the link returns (TCP never delivers a stream with a gap).
    const idle = await client(proxy.endpoint);
    assert.equal(proxy.connections, 2);
    proxy.blackhole('toServer');
    s.write('lost');
    assert.equal(await readBytes(s, 4, 200), '', 'black-holed bytes vanish');
    s.on('error', () => undefined); // the reset arrives as an error
    const gapClosed = new Promise((resolve) => s.once('close', resolve));
    proxy.pass();
    await gapClosed;
    assert.equal(proxy.connections, 1, 'only the connection that lost bytes was reset');
    idle.write('back');
    assert.equal(await readBytes(idle, 4, 2000), 'back');

    idle.on('error', () => undefined); // the cut arrives as a reset
    const closed = new Promise((resolve) => idle.once('close', resolve));
    proxy.cutAll();
    await closed;
    assert.equal(proxy.connections, 0);
    assert.deepEqual(proxy.mode('toClient'), { kind: 'pass' });
  });
});
