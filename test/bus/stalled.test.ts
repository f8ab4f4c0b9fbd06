/**
 * Issue 17: a stalled subscriber is isolated — the publisher never waits for it, so neither do the
 * other subscribers. Judged by event order, not by wall-clock budgets: a publish must resolve before
 * the next turn of the event loop (`setImmediate`), which it cannot do if it awaits the frozen peer.
 */
import assert from 'node:assert/strict';
import { createServer, type Socket } from 'node:net';
import { describe, test } from 'node:test';
import { type DropEvent } from '../../src/bus/index.js';
import { join } from '../../src/membership/index.js';
import { MemoryStore } from '../../src/store/index.js';
import { waitFor } from '../../src/testing/index.js';
import { busNodes } from './fixtures/nodes.js';

const { node } = busNodes();

/** Resolves with the promise's value, or 'blocked' if it is still pending at the next macrotask. */
function beforeNextTurn<T>(p: Promise<T>): Promise<T | 'blocked'> {
  return Promise.race([p, new Promise<'blocked'>((r) => setImmediate(() => r('blocked')))]);
}

/** A frozen peer (as under SIGSTOP): the kernel accepts its connections, nothing ever answers. */
async function frozenPeer(store: MemoryStore, topic: string) {
  const sockets: Socket[] = [];
  const server = createServer((s) => {
    s.pause();
    sockets.push(s);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  const member = await join(store, {
    service: `topic.${topic}`,
    id: 'frozen',
    address: `127.0.0.1:${port}`,
    tags: ['muster-bus', 'sub:all'],
  });
  return {
    sockets,
    async close(): Promise<void> {
      await member.leave();
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}

describe('bus: a stalled subscriber is isolated', () => {
  test(
    'publishes resolve at once while a subscriber is frozen; its messages queue to the bound, then drop with events',
    { timeout: 30_000 },
    async () => {
      const store = new MemoryStore();
      // A connect that would take a minute: any await on it shows up as a blocked publish.
      const pub = await node(store, { connectTimeout: '60s', maxQueueBytes: 64 * 1024 });
      const healthy = await node(store);
      const got: number[] = [];
      await healthy.subscribe('jobs', (m) => got.push((m as { i: number }).i));
      const frozen = await frozenPeer(store, 'jobs');
      const drops: DropEvent[] = [];
      pub.on('dropped', (e) => drops.push(e));
      const payload = 'x'.repeat(4096);
      // The first publish opens the topic's view (a store read); from then on nothing may wait.
      const first = pub.publish('jobs', { i: -1, payload });
      await waitFor(() => frozen.sockets.length > 0 && pub.peers().get(healthy.address)?.state === 'open', {
        what: 'the publisher dialed the frozen peer and reached the healthy one',
      });
      assert.notEqual(await beforeNextTurn(first), 'blocked', 'the first publish waited for the frozen peer');
      const n = 40;
      for (let i = 0; i < n; i++) {
        const r = await beforeNextTurn(pub.publish('jobs', { i, payload }));
        if (r === 'blocked') assert.fail(`publish ${i} waited for the frozen subscriber`);
        assert.equal(r.sent + r.dropped, 2);
        await new Promise((resolve) => setImmediate(resolve)); // I/O turn: the healthy one reads
      }
      await waitFor(() => got.length === n + 1, { what: 'the healthy subscriber got every message' });
      // 64 KiB of 4 KiB frames: the rest were dropped at the bound, each counted and reported.
      const full = drops.filter((d) => d.reason === 'queue-full');
      assert.ok(full.length > 0 && full.length < n, `queue-full drops: ${full.length}`);
      assert.ok(drops.every((d) => d.peer === 'frozen'));
      // The connect fails (the peer's socket closes): what was queued for it is dropped, reported.
      for (const s of frozen.sockets) s.destroy();
      await waitFor(() => drops.some((d) => d.reason === 'not-connected'), {
        what: 'queued messages dropped as not-connected',
      });
      assert.equal(drops.length, n + 1, 'every message for the frozen peer is accounted for');
      const metrics = await pub.metrics.registry.getSingleMetricAsString('muster_bus_dropped_total');
      assert.match(metrics, /peer="frozen"[^\n]*reason="queue-full"/);
      assert.match(metrics, /peer="frozen"[^\n]*reason="not-connected"/);
      await frozen.close();
    },
  );

  test(
    'negative control: an acknowledged publish does wait for the frozen subscriber (the check can fail)',
    { timeout: 30_000 },
    async () => {
      const store = new MemoryStore();
      const pub = await node(store, { connectTimeout: '60s' });
      const healthy = await node(store);
      await healthy.subscribe('acked', () => undefined);
      const frozen = await frozenPeer(store, 'acked');
      await pub.publish('acked', { i: -1 }); // opens the view
      const acked = pub.publish('acked', { i: 0 }, { ack: true, timeout: '60s' });
      acked.catch(() => undefined);
      assert.equal(await beforeNextTurn(acked), 'blocked');
      await frozen.close();
    },
  );
});
