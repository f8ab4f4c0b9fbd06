/**
 * accept.ts: sockets accepted in `onread` mode behave as sockets Node accepted itself — bytes reach
 * the reader, `pause()`/`resume()` stop and restart them, writes keep their back-pressure
 * (`write()` false, then `'drain'`), the peer's FIN ends the socket, a reset and a write after the
 * peer left come out as `'error'` then `'close'`. And a server that does not listen is left alone.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { acceptWithSharedBuffer } from '../../src/proxy/accept.js';

/** 'close' (events.once would reject on the 'error' before it). */
function closeOf(socket: Socket): Promise<void> {
  return new Promise((resolve) => socket.once('close', () => resolve()));
}

interface Accepted {
  readonly socket: Socket;
  readonly bytes: Buffer[];
  /** Resolves at the next read. */
  next(): Promise<void>;
}

describe('proxy: client sockets accepted in onread mode', { timeout: 60_000 }, () => {
  let server: Server;
  let port = 0;
  const accepted: ((a: Accepted) => void)[] = [];

  before(async () => {
    server = createServer(() => assert.fail("'connection' must not be emitted"));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as { port: number }).port;
    assert.equal(
      acceptWithSharedBuffer(server, (socket) => {
        const bytes: Buffer[] = [];
        let wake: (() => void) | undefined;
        const a: Accepted = {
          socket,
          bytes,
          next: () => new Promise<void>((resolve) => (wake = resolve)),
        };
        accepted.shift()?.(a);
        return {
          read(chunk) {
            bytes.push(Buffer.from(chunk)); // valid during the call only
            const w = wake;
            wake = undefined;
            w?.();
          },
        };
      }),
      true,
    );
  });
  after(() => new Promise<void>((resolve) => server.close(() => resolve())));

  /** A client connection and the server's side of it. */
  async function pair(): Promise<{ client: Socket; a: Accepted }> {
    const got = new Promise<Accepted>((resolve) => accepted.push(resolve));
    const client = connect(port, '127.0.0.1');
    client.on('error', () => undefined);
    await once(client, 'connect');
    return { client, a: await got };
  }

  test('a server that does not listen keeps its own connection handling', () => {
    assert.equal(
      acceptWithSharedBuffer(createServer(), () => undefined),
      false,
    );
  });

  test('bytes reach the reader; pause() stops them until resume()', async () => {
    const { client, a } = await pair();
    let read = a.next();
    client.write('hello');
    await read;
    assert.equal(Buffer.concat(a.bytes).toString(), 'hello');
    a.socket.pause();
    client.write('world');
    // the bytes wait in the kernel while paused: give the loop a few turns to show they do
    for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve));
    assert.equal(Buffer.concat(a.bytes).toString(), 'hello');
    read = a.next();
    a.socket.resume();
    await read;
    assert.equal(Buffer.concat(a.bytes).toString(), 'helloworld');
    client.destroy();
    await once(a.socket, 'close');
  });

  test('writes keep their back-pressure: false when full, drain when the client reads', async () => {
    const { client, a } = await pair();
    client.pause(); // the client reads nothing yet
    const piece = Buffer.alloc(1024 * 1024, 7);
    let written = 0;
    while (a.socket.write(piece)) written += piece.length;
    written += piece.length;
    assert.ok(written < 256 * 1024 * 1024, 'write() never returned false');
    const drained = once(a.socket, 'drain');
    let received = 0;
    client.on('data', (d: Buffer) => (received += d.length));
    client.resume();
    await drained;
    a.socket.end();
    await once(client, 'end');
    assert.equal(received, written);
    await once(a.socket, 'close');
  });

  test("the client's FIN ends the socket ('end', then 'close')", async () => {
    const { client, a } = await pair();
    const ended = once(a.socket, 'end');
    const closed = once(a.socket, 'close');
    client.end();
    await ended;
    await closed;
  });

  test("a reset, and a write after the client left, come out as 'error' then 'close'", async () => {
    {
      const { client, a } = await pair();
      const errored = once(a.socket, 'error');
      const closed = closeOf(a.socket);
      client.resetAndDestroy();
      // a reset is seen on the next read or write
      const write = (): void => void a.socket.write('x');
      const timer = setInterval(write, 5);
      const [err] = (await errored) as [NodeJS.ErrnoException];
      clearInterval(timer);
      assert.ok(['ECONNRESET', 'EPIPE'].includes(err.code ?? ''), `unexpected ${err.code}`);
      await closed;
    }
    {
      const { client, a } = await pair();
      client.destroy();
      const errored = once(a.socket, 'error');
      const closed = closeOf(a.socket);
      const timer = setInterval(() => a.socket.write(Buffer.alloc(64 * 1024)), 5);
      const [err] = (await Promise.race([errored, closed.then(() => [undefined])])) as [
        NodeJS.ErrnoException | undefined,
      ];
      clearInterval(timer);
      // the FIN may end the socket before a write fails; a failed write is EPIPE or ECONNRESET
      if (err !== undefined)
        assert.ok(['ECONNRESET', 'EPIPE'].includes(err.code ?? ''), `unexpected ${err.code}`);
      await closed;
    }
  });
});
