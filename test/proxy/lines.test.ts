/**
 * Line-protocol mode: newline-delimited JSON over TCP, routed by a field of each message. A client's
 * connection stays open while its backend restarts and while its partition moves; its messages are
 * held and delivered in order, none lost or repeated.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, test } from 'node:test';
import { joinPartitioned, type PartitionedHandle } from '../../src/partitions/index.js';
import { keyOfMessage, startProxy } from '../../src/proxy/index.js';
import { openMemoryStore, type MemoryStore } from '../../src/store/index.js';
import { waitFor } from '../../src/testing/index.js';
import { testConfig } from './helpers.js';

const SERVICE = 'stratum';

interface LineBackend {
  readonly id: string;
  readonly address: string;
  handle?: PartitionedHandle;
  restarts: number;
  close(): Promise<void>;
}

/**
 * A line backend: answers each `{ seq }` with `{ backend, seq }` and records the arrival. With
 * `restartAfter`, after answering that seq it closes every connection and its listener, and listens
 * again on the same port 300 ms later (a restart).
 */
async function lineBackend(id: string, arrivals: number[], restartAfter?: number): Promise<LineBackend> {
  const sockets = new Set<Socket>();
  let server: Server;
  const self: LineBackend = {
    id,
    address: '',
    restarts: 0,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
  const start = async (port: number): Promise<number> => {
    server = createServer((socket) => {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
      socket.on('error', () => socket.destroy());
      let rest = '';
      socket.on('data', (chunk: Buffer) => {
        const parts = (rest + chunk.toString()).split('\n');
        rest = parts.pop() ?? '';
        for (const line of parts) {
          const { seq } = JSON.parse(line) as { seq: number };
          arrivals.push(seq);
          socket.write(`${JSON.stringify({ backend: id, seq })}\n`);
          if (seq === restartAfter) {
            self.restarts++;
            for (const s of sockets) s.end();
            const again = (server.address() as { port: number }).port;
            server.close();
            setTimeout(() => void start(again), 300);
          }
        }
      });
    });
    await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
    return (server.address() as { port: number }).port;
  };
  const port = await start(0);
  return Object.assign(self, { address: `127.0.0.1:${port}` });
}

async function own(store: MemoryStore, b: LineBackend): Promise<void> {
  b.handle = await joinPartitioned(store, {
    service: SERVICE,
    partitions: 1,
    id: b.id,
    address: b.address,
    ttl: 2000,
    onAcquire: () => undefined,
  });
}

describe('proxy line-protocol mode', { timeout: 60_000 }, () => {
  test('keyOfMessage reads a field path', () => {
    assert.equal(keyOfMessage('{"params":["u1","x"]}', ['params', '0']), 'u1');
    assert.equal(keyOfMessage('{"a":{"b":7}}', ['a', 'b']), '7');
    assert.equal(keyOfMessage('{"a":{}}', ['a', 'b']), undefined);
    assert.equal(keyOfMessage('not json', ['a']), undefined);
  });

  test('messages are held across a backend restart and a partition move, then delivered in order', async () => {
    const store = openMemoryStore();
    const arrivals: number[] = [];
    const a = await lineBackend('a', arrivals, 10);
    const b = await lineBackend('b', arrivals);
    await store.put(`/muster/services/${SERVICE}/pins/0`, JSON.stringify({ instance: 'a' }));
    await own(store, a);
    await own(store, b);
    const proxy = await startProxy({
      store,
      config: testConfig(SERVICE, { lines: { listen: '127.0.0.1:0', key: 'params.0' } }),
    });
    const client = connect(Number(proxy.lineAddresses[0]?.split(':')[1]), '127.0.0.1');
    const connected = once(client, 'connect');
    try {
      await waitFor(() => proxy.source.owners.get('0')?.instance === 'a', { what: 'a owns 0' });
      await connected;
      const replies: { backend?: string; seq?: number; error?: unknown }[] = [];
      let rest = '';
      client.on('data', (chunk: Buffer) => {
        const parts = (rest + chunk.toString()).split('\n');
        rest = parts.pop() ?? '';
        for (const p of parts) replies.push(JSON.parse(p) as (typeof replies)[number]);
      });
      const N = 40;
      for (let seq = 0; seq < N; seq++) {
        if (seq === 25)
          await store.put(`/muster/services/${SERVICE}/pins/0`, JSON.stringify({ instance: 'b' }));
        client.write(`${JSON.stringify({ id: seq, method: 'submit', params: ['user1'], seq })}\n`);
        await waitFor(() => replies.length > seq, {
          what: `reply ${seq} (arrivals ${arrivals.join(',')})`,
          timeoutMs: 10_000,
        });
        await sleep(10); // pace the client so the move happens mid-stream
      }
      assert.deepEqual(
        replies.filter((r) => r.error !== undefined),
        [],
        'no client saw an error',
      );
      assert.deepEqual(
        arrivals,
        Array.from({ length: N }, (_, i) => i),
        'each message once, in order',
      );
      assert.deepEqual(
        replies.map((r) => r.seq),
        Array.from({ length: N }, (_, i) => i),
      );
      assert.equal(a.restarts, 1, 'the backend restarted under the open client connection');
      assert.equal(replies[N - 1]?.backend, 'b', 'the partition moved to b');
      assert.equal(replies[0]?.backend, 'a');
    } finally {
      client.destroy();
      await proxy.close();
      for (const x of [a, b]) {
        await x.handle?.close();
        await x.close();
      }
      await store.close();
    }
  });

  test('a message without the key field gets an error line; the connection stays open', async () => {
    const store = openMemoryStore();
    const proxy = await startProxy({
      store,
      config: testConfig(SERVICE, { lines: { listen: '127.0.0.1:0', key: 'params.0' } }),
    });
    const client = connect(Number(proxy.lineAddresses[0]?.split(':')[1]), '127.0.0.1');
    try {
      await once(client, 'connect');
      client.write('{"method":"login"}\n');
      const [chunk] = (await once(client, 'data')) as [Buffer];
      assert.equal(
        (JSON.parse(chunk.toString()) as { error: { code: string } }).error.code,
        'MUSTER_NO_ROUTING_KEY',
      );
      assert.equal(client.destroyed, false);
    } finally {
      client.destroy();
      await proxy.close();
      await store.close();
    }
  });
});
