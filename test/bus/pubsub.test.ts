/**
 * Publish/subscribe on real sockets, nodes in this process over a memory store.
 */
import assert from 'node:assert/strict';
import { createServer, type Socket } from 'node:net';
import { describe, test } from 'node:test';
import {
  DedupWindow,
  type DropEvent,
  encodeFrame,
  FrameKind,
  PROTOCOL_VERSION,
} from '../../src/bus/index.js';
import { join } from '../../src/membership/index.js';
import { drainInstance } from '../../src/proxy/index.js';
import { MemoryStore } from '../../src/store/index.js';
import { freePort, startFaultProxy, waitFor } from '../../src/testing/index.js';
import { busNodes } from './fixtures/nodes.js';

const { node } = busNodes();

describe('bus publish/subscribe', () => {
  test(
    'every subscriber node gets each message; a late subscriber gets messages from then on',
    { timeout: 20_000 },
    async () => {
      const store = new MemoryStore();
      const pub = await node(store);
      const got: string[][] = [[], [], []];
      const subs = [await node(store), await node(store)];
      await subs[0]?.subscribe('jobs', (m) => got[0]?.push(m as string));
      await subs[1]?.subscribe('jobs', (m) => got[1]?.push(m as string));
      for (let i = 0; i < 20; i++) await pub.publish('jobs', `m${i}`);
      await waitFor(() => got[0]?.length === 20 && got[1]?.length === 20, { what: 'both got 20' });
      const late = await node(store);
      await late.subscribe('jobs', (m) => got[2]?.push(m as string));
      const r = await pub.publish('jobs', 'after');
      assert.equal(r.sent, 3);
      await waitFor(() => got[2]?.length === 1, { what: 'late subscriber got one' });
      assert.deepEqual(got[2], ['after']);
      assert.deepEqual(got[0], [...Array.from({ length: 20 }, (_, i) => `m${i}`), 'after']);
    },
  );

  test(
    'the same id from two publishers is delivered once; queue groups share messages',
    { timeout: 20_000 },
    async () => {
      const store = new MemoryStore();
      const p1 = await node(store);
      const p2 = await node(store);
      const seen: string[] = [];
      const sub = await node(store);
      await sub.subscribe('dedup', (_m, d) => seen.push(d.id));
      const workers = [await node(store), await node(store)];
      const worked: string[][] = [[], []];
      for (const [i, w] of workers.entries()) {
        await w.subscribe('dedup', (_m, d) => worked[i]?.push(d.id), { queueGroup: 'workers' });
      }
      for (let i = 0; i < 50; i++) {
        await Promise.all([
          p1.publish('dedup', i, { id: `id-${i}` }),
          p2.publish('dedup', i, { id: `id-${i}` }),
        ]);
      }
      await waitFor(() => seen.length === 50 && (worked[0]?.length ?? 0) + (worked[1]?.length ?? 0) === 50, {
        what: 'all delivered',
      });
      assert.equal(new Set(seen).size, 50);
      // Each message went to one worker of the group, and both redundant publishers chose the same one.
      assert.ok((worked[0]?.length ?? 0) > 0 && (worked[1]?.length ?? 0) > 0, 'both workers got some');
      assert.equal(new Set([...(worked[0] ?? []), ...(worked[1] ?? [])]).size, 50);
    },
  );

  test(
    'a queue group gives no message to a drained member while a healthy one is there, and loses none when all are drained',
    { timeout: 20_000 },
    async () => {
      const store = new MemoryStore();
      const pub = await node(store);
      const workers = [await node(store, { id: 'w0' }), await node(store, { id: 'w1' })];
      const worked: string[][] = [[], []];
      for (const [i, w] of workers.entries()) {
        await w.subscribe('work', (_m, d) => worked[i]?.push(d.id), { queueGroup: 'workers' });
      }
      const view = await pub.instances('topic.work');
      const stateOf = (id: string): string | undefined => view.instances().find((i) => i.id === id)?.state;
      await waitFor(() => stateOf('w0') === 'active' && stateOf('w1') === 'active', {
        what: 'both workers seen',
      });
      await drainInstance(store, 'topic.work', 'w1');
      await waitFor(() => stateOf('w1') === 'draining', { what: 'the publisher sees w1 drained' });
      for (let i = 0; i < 40; i++) await pub.publish('work', i, { id: `a-${i}` });
      await waitFor(() => (worked[0]?.length ?? 0) + (worked[1]?.length ?? 0) === 40, {
        what: '40 delivered',
      });
      assert.equal(worked[0]?.length, 40, `w1 is drained but got ${worked[1]?.join(', ')}`);
      // Every member drained: the group still gets each message (one member), none is lost.
      await drainInstance(store, 'topic.work', 'w0');
      await waitFor(() => stateOf('w0') === 'draining', { what: 'the publisher sees w0 drained' });
      for (let i = 0; i < 40; i++) await pub.publish('work', i, { id: `b-${i}` });
      await waitFor(() => (worked[0]?.length ?? 0) + (worked[1]?.length ?? 0) === 80, {
        what: '80 delivered',
      });
      assert.ok((worked[1]?.length ?? 0) > 0, 'with every member drained, the hash spreads over all again');
    },
  );

  test(
    'an expired message is dropped, counted and reported, not delivered',
    { timeout: 20_000 },
    async () => {
      const store = new MemoryStore();
      const pub = await node(store);
      const sub = await node(store);
      const got: unknown[] = [];
      const drops: DropEvent[] = [];
      sub.on('dropped', (e) => drops.push(e));
      await sub.subscribe('ttl', (m) => got.push(m));
      await pub.publish('ttl', 'fresh', { ttl: '10s' });
      await pub.publish('ttl', 'stale', { ttl: 0 });
      await waitFor(() => got.length === 1 && drops.length === 1, { what: 'one delivered, one dropped' });
      assert.deepEqual(got, ['fresh']);
      assert.equal(drops[0]?.reason, 'expired');
      const metrics = await sub.metrics.registry.getSingleMetricAsString('muster_bus_dropped_total');
      assert.match(metrics, /reason="expired"[^\n]* 1/);
    },
  );

  test(
    'a subscriber that stops reading is dropped at its bound, with a counter and an event; others unaffected',
    { timeout: 30_000 },
    async () => {
      const store = new MemoryStore();
      const pub = await node(store, { maxQueueBytes: 1024 * 1024 });
      const healthy = await node(store);
      const got: unknown[] = [];
      await healthy.subscribe('flood', (m) => got.push(m));
      // A stuck subscriber: registers for the topic, answers the hello and heartbeats, never reads.
      const sockets: Socket[] = [];
      const stuck = createServer((s) => {
        sockets.push(s);
        s.once('data', () => {
          s.pause();
          s.write(
            encodeFrame(FrameKind.Hello, 0, { v: PROTOCOL_VERSION, node: 'stuck', address: 'stuck:1' }),
          );
          const ping = setInterval(() => s.write(encodeFrame(FrameKind.Ping, 0)), 200);
          s.on('close', () => clearInterval(ping));
        });
      });
      await new Promise<void>((r) => stuck.listen(0, '127.0.0.1', r));
      const port = (stuck.address() as { port: number }).port;
      const member = await join(store, {
        service: 'topic.flood',
        id: 'stuck',
        address: `127.0.0.1:${port}`,
        tags: ['muster-bus', 'sub:all'],
      });
      const drops: DropEvent[] = [];
      pub.on('dropped', (e) => drops.push(e));
      const payload = 'x'.repeat(64 * 1024);
      const n = 400;
      for (let i = 0; i < n; i++) {
        await pub.publish('flood', { i, payload });
        // Let the healthy subscriber (in this process) read: it must never be dropped.
        await new Promise((r) => setImmediate(r));
      }
      await waitFor(() => got.length === n, {
        timeoutMs: 20_000,
        what: 'the healthy subscriber got everything',
      });
      assert.ok(drops.length > 0, 'drops were reported');
      assert.ok(drops.every((d) => d.peer === 'stuck' && d.reason === 'queue-full'));
      const metrics = await pub.metrics.registry.getSingleMetricAsString('muster_bus_dropped_total');
      assert.match(metrics, new RegExp(`peer="stuck"[^\\n]*reason="queue-full"[^\\n]* ${drops.length}`));
      await member.leave();
      for (const s of sockets) s.destroy();
      stuck.close();
    },
  );

  test(
    'ack: at-least-once through broken connections, each id delivered once',
    { timeout: 30_000 },
    async () => {
      const store = new MemoryStore();
      const pub = await node(store);
      const sub = await node(store);
      const got: string[] = [];
      await sub.subscribe('cmds', async (_m, d) => {
        got.push(d.id);
        await new Promise((r) => setImmediate(r));
      });
      let breaks = 0;
      const results = [];
      for (let i = 0; i < 200; i++) {
        const p = pub.publish('cmds', { i }, { id: `cmd-${i}`, ack: true, timeout: 10_000 });
        if (i % 20 === 5) {
          // Sever the connection with the publication (or its ack) in flight.
          for (const c of pub.peers().values()) c.socket.destroy();
          breaks++;
        }
        results.push(await p);
      }
      assert.ok(breaks >= 5);
      assert.ok(
        results.every((r) => r.acked === 1 && r.dropped === 0),
        JSON.stringify(results.find((r) => r.acked !== 1)),
      );
      assert.equal(got.length, 200, 'every command delivered');
      assert.equal(new Set(got).size, 200, 'none twice');
    },
  );

  test(
    'unsubscribe then subscribe again at once: the record is re-created, messages flow again',
    { timeout: 20_000 },
    async () => {
      const store = new MemoryStore();
      const pub = await node(store);
      const sub = await node(store);
      const got: unknown[] = [];
      const off = await sub.subscribe('again', (m) => got.push(m));
      const offDone = off();
      const off2 = await sub.subscribe('again', (m) => got.push(m));
      await offDone;
      const view = await pub.instances('topic.again');
      await waitFor(() => view.size === 1, { what: 'the subscriber record is back' });
      await pub.publish('again', 'hello');
      await waitFor(() => got.length === 1, { what: 'delivered after re-subscribing' });
      await off2();
      await waitFor(() => view.size === 0, { what: 'record gone after the last unsubscribe' });
      const r = await pub.publish('again', 'nobody');
      assert.equal(r.sent, 0);
    },
  );

  test(
    'issue 17: publications written to a connection that then breaks are reported unconfirmed, never counted as delivered',
    { timeout: 30_000 },
    async () => {
      const store = new MemoryStore();
      const fast = { heartbeatInterval: 100, heartbeatTimeout: 400 };
      const pub = await node(store, { id: 'pub', ...fast });
      const drops: DropEvent[] = [];
      pub.on('dropped', (e) => drops.push(e));
      // The subscriber is reachable only through a fault proxy; a second one directly.
      const port = await freePort();
      const cut = await node(store, { id: 'cut', advertise: `127.0.0.1:${port}`, ...fast });
      const proxy = await startFaultProxy({ target: cut.boundAddress, port });
      const closing = await node(store, { id: 'closing', ...fast });
      const got = { cut: new Set<string>(), closing: new Set<string>() };
      await cut.subscribe('acct', (_m, d) => void got.cut.add(d.id));
      await closing.subscribe('acct', (_m, d) => void got.closing.add(d.id));
      const view = await pub.instances('topic.acct');
      await waitFor(() => view.size === 2, { what: 'both subscribers listed' });
      for (let i = 0; i < 20; i++) await pub.publish('acct', i, { id: `a-${i}` });
      await waitFor(() => got.cut.size === 20 && got.closing.size === 20, { what: 'a-* delivered' });
      const toCut = pub.peers().get(`127.0.0.1:${port}`);
      const toClosing = pub.peers().get(closing.address);
      await waitFor(() => toCut?.unconfirmed === 0 && toClosing?.unconfirmed === 0, {
        what: 'a-* confirmed by both subscribers (their heartbeats carry the count)',
      });
      // The network to `cut` goes dark: b-* are written to its connection and never arrive.
      proxy.blackhole();
      const results = [];
      for (let i = 0; i < 10; i++) results.push(await pub.publish('acct', i, { id: `b-${i}` }));
      assert.ok(
        results.every((r) => r.sent === 2 && r.dropped === 0),
        'written to both connections',
      );
      await waitFor(() => toCut?.state === 'closed', { what: 'the heartbeat closes the dark connection' });
      const unconfirmed = drops.filter((d) => d.reason === 'unconfirmed');
      assert.deepEqual(
        unconfirmed.map((d) => `${d.peer}:${d.id}`),
        Array.from({ length: 10 }, (_, i) => `cut:b-${i}`),
        'exactly the unconfirmed ones, reported with the peer',
      );
      assert.equal(got.cut.size, 20, 'none of b-* reached cut');
      const metric = await pub.metrics.registry.getSingleMetricAsString('muster_bus_dropped_total');
      assert.match(metric, /muster_bus_dropped_total\{peer="cut",topic="acct",reason="unconfirmed"\} 10/);
      // A subscriber that closes gracefully confirms what it received first: nothing is reported.
      await waitFor(() => got.closing.size === 30, { what: 'b-* delivered to closing' });
      await closing.close();
      await waitFor(() => toClosing?.state === 'closed', { what: 'the graceful close seen' });
      assert.equal(drops.filter((d) => d.peer === 'closing').length, 0, JSON.stringify(drops));
      await proxy.close();
    },
  );

  test('the de-duplication window forgets old ids and stays bounded', () => {
    const w = new DedupWindow(1000, 3);
    assert.equal(w.first('a', 0), true);
    assert.equal(w.first('a', 10), false);
    assert.equal(w.first('a', 1001), true);
    for (const id of ['b', 'c', 'd', 'e']) w.first(id, 1002);
    assert.equal(w.first('b', 1003), true, 'evicted by the size bound');
  });
});
