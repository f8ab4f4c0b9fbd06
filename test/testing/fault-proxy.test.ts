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

  test('passes, delays, pauses, black-holes and cuts', async () => {
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

    proxy.blackhole('toServer');
    s.write('lost');
    assert.equal(await readBytes(s, 4, 200), '', 'black-holed bytes vanish');
    proxy.pass();
    s.write('back');
    assert.equal(await readBytes(s, 4, 2000), 'back');

    assert.equal(proxy.connections, 1);
    s.on('error', () => undefined); // the cut arrives as a reset
    const closed = new Promise((resolve) => s.once('close', resolve));
    proxy.cutAll();
    await closed;
    assert.equal(proxy.connections, 0);
    assert.deepEqual(proxy.mode('toClient'), { kind: 'pass' });
  });
});
