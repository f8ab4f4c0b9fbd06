/**
 * Bus RPC on real sockets, nodes in this process over a memory store: round trip, coded errors,
 * timeouts, bad input (oversized frames, garbage bytes, a peer that never reads).
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect, createServer, type Socket } from 'node:net';
import { describe, test } from 'node:test';
import { encodeFrame, FrameKind, PROTOCOL_VERSION } from '../../src/bus/index.js';
import { isMusterError, MusterError } from '../../src/errors.js';
import { join } from '../../src/membership/index.js';
import { MemoryStore } from '../../src/store/index.js';
import { onAbort } from '../../src/util/abort.js';
import { freePort, startFaultProxy, waitFor } from '../../src/testing/index.js';
import { busNodes, quiet, rejectsWith } from './fixtures/nodes.js';

const { node } = busNodes();

describe('bus rpc', () => {
  test('round trip, caller identity, $info', { timeout: 20_000 }, async () => {
    const store = new MemoryStore();
    const server = await node(store, { id: 'server' });
    const client = await node(store, { id: 'client' });
    await server.serve('echo', {
      echo: (m, ctx) => ({ m, caller: ctx.caller.node }),
      add: async (m) => (m as { a: number; b: number }).a + (m as { a: number; b: number }).b,
    });
    assert.deepEqual(await client.call('echo', 'echo', { x: 1 }), { m: { x: 1 }, caller: 'client' });
    assert.equal(await client.call('echo', 'add', { a: 2, b: 3 }), 5);
    const info = (await client.call('echo', '$info')) as { methods: Record<string, { requests: number }> };
    assert.equal(info.methods.echo?.requests, 1);
    assert.equal(info.methods.add?.requests, 1);
    // One connection between the pair, reused.
    for (let i = 0; i < 50; i++) await client.call('echo', 'echo', i);
    assert.equal(client.peers().size, 1);
  });

  test(
    'one deadline timer per connection: a shorter timeout after a longer one fires first, and the longer one still fires',
    { timeout: 20_000 },
    async () => {
      const store = new MemoryStore();
      const server = await node(store);
      const client = await node(store);
      await server.serve('d', {
        hang: (_m, ctx) => new Promise((resolve) => onAbort(ctx.signal, () => resolve(null))),
        ok: () => 'ok',
      });
      assert.equal(await client.call('d', 'ok'), 'ok'); // the connection is open
      const order: string[] = [];
      const timedOut = (name: string, p: Promise<unknown>): Promise<void> =>
        rejectsWith(p, 'MUSTER_TIMEOUT').then(() => void order.push(name));
      const long = timedOut('long', client.call('d', 'hang', null, { timeout: 1500 }));
      // Armed for 1,500 ms; a 100 ms call must re-arm it earlier…
      await timedOut('short', client.call('d', 'hang', null, { timeout: 100 }));
      // …and after it fired, the timer must be armed again for the calls still pending.
      await timedOut('second short', client.call('d', 'hang', null, { timeout: 100 }));
      // A call answered in time is not touched by the timer firing for others.
      assert.equal(await client.call('d', 'ok', null, { timeout: 1000 }), 'ok');
      await long;
      assert.deepEqual(order, ['short', 'second short', 'long']);
      const conn = [...client.peers().values()][0];
      assert.equal(conn?.inFlight, 0, 'nothing left pending');
    },
  );

  test('balanced by weight, this host first', { timeout: 20_000 }, async () => {
    const store = new MemoryStore();
    const client = await node(store);
    const light = await node(store, { id: 'light' });
    const heavy = await node(store, { id: 'heavy' });
    await light.serve('w', { who: () => 'light' }, { weight: 1 });
    await heavy.serve('w', { who: () => 'heavy' }, { weight: 3 });
    const view = await client.instances('w');
    await waitFor(() => view.size === 2, { what: 'both instances' });
    const counts: Record<string, number> = {};
    for (let i = 0; i < 40; i++) {
      const who = (await client.call('w', 'who')) as string;
      counts[who] = (counts[who] ?? 0) + 1;
    }
    assert.deepEqual(counts, { light: 10, heavy: 30 });
    // Another host (127.0.0.2: another loopback address) is used only when this host has no instance.
    const port = await freePort();
    const far = await node(store, { id: 'far', host: '0.0.0.0', port, advertise: `127.0.0.2:${port}` });
    const near = await node(store, { id: 'near' });
    const serving = await near.serve('h', { who: () => 'near' });
    await far.serve('h', { who: () => 'far' }, { weight: 10 });
    const hv = await client.instances('h');
    await waitFor(() => hv.size === 2, { what: 'both instances of h' });
    for (let i = 0; i < 10; i++) assert.equal(await client.call('h', 'who'), 'near');
    await serving.close();
    await waitFor(() => hv.size === 1, { what: 'near left' });
    assert.equal(await client.call('h', 'who'), 'far');
  });

  test('no instance: MUSTER_NO_INSTANCE at once', { timeout: 10_000 }, async () => {
    const store = new MemoryStore();
    const client = await node(store);
    const started = performance.now();
    await rejectsWith(client.call('nobody', 'x', 1, { timeout: 5000 }), 'MUSTER_NO_INSTANCE');
    assert.ok(performance.now() - started < 1000);
  });

  test('remote coded error, handler throws, unknown method, timeout', { timeout: 20_000 }, async () => {
    const store = new MemoryStore();
    const server = await node(store);
    const client = await node(store);
    let sawAbort = false;
    await server.serve('svc', {
      coded: () => {
        throw new MusterError('MUSTER_NOT_FOUND', 'no such job', { details: { job: 7 } });
      },
      appCoded: async () => {
        throw Object.assign(new Error('bad share'), { code: 'APP_BAD_SHARE' });
      },
      plain: () => {
        throw new TypeError('oops');
      },
      slow: (_m, ctx) =>
        new Promise((resolve) => {
          onAbort(ctx.signal, () => {
            sawAbort = true;
            resolve('late');
          });
        }),
      ok: () => 'ok',
    });
    const e1 = await rejectsWith(client.call('svc', 'coded'), 'MUSTER_REMOTE');
    assert.deepEqual((e1.details.remote as { code: string; details: unknown }).code, 'MUSTER_NOT_FOUND');
    assert.deepEqual((e1.details.remote as { details: unknown }).details, { job: 7 });
    const e2 = await rejectsWith(client.call('svc', 'appCoded'), 'MUSTER_REMOTE');
    assert.equal((e2.details.remote as { code: string }).code, 'APP_BAD_SHARE');
    const e3 = await rejectsWith(client.call('svc', 'plain'), 'MUSTER_REMOTE');
    assert.match(e3.message, /oops/);
    // Arguments that are not JSON: refused before sending.
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    await rejectsWith(client.call('svc', 'ok', cyclic), 'MUSTER_INVALID_ARGUMENT');
    const e4 = await rejectsWith(client.call('svc', 'nope'), 'MUSTER_UNKNOWN_METHOD');
    assert.ok((e4.details.methods as string[]).includes('ok'));
    await rejectsWith(client.call('svc', 'slow', null, { timeout: 100 }), 'MUSTER_TIMEOUT');
    await waitFor(() => sawAbort, { what: 'the handler saw the cancel' });
    // The connection and other calls are unaffected.
    assert.equal(await client.call('svc', 'ok'), 'ok');
    const ac = new AbortController();
    const p = client.call('svc', 'slow', null, { signal: ac.signal });
    ac.abort();
    await rejectsWith(p, 'MUSTER_ABORTED');
  });

  test(
    'a lost connection: a non-idempotent call fails with MUSTER_PEER_LOST and never runs twice; an idempotent one is retried elsewhere',
    { timeout: 20_000 },
    async () => {
      const store = new MemoryStore();
      const a = await node(store, { id: 'a' });
      const b = await node(store, { id: 'b' });
      const client = await node(store);
      const runs = { a: 0, b: 0 };
      // a runs the call, then its connections break before it can answer.
      await a.serve('flaky', {
        op: () => {
          runs.a++;
          for (const c of a.peers().values()) c.socket.destroy();
          return new Promise(() => undefined);
        },
      });
      await b.serve('flaky', {
        op: () => {
          runs.b++;
          return 'b';
        },
      });
      const view = await client.instances('flaky');
      await waitFor(() => view.size === 2, { what: 'both instances' });
      // Non-idempotent: whenever a call lands on a, it fails and b never sees it.
      let lost: unknown;
      for (let i = 0; i < 10 && lost === undefined; i++) {
        const before = { ...runs };
        try {
          assert.equal(await client.call('flaky', 'op'), 'b');
        } catch (err) {
          lost = err;
          assert.deepEqual(runs, { a: before.a + 1, b: before.b }, 'ran once, on a only');
        }
      }
      assert.ok(isMusterError(lost, 'MUSTER_PEER_LOST'), String(lost));
      // Idempotent: a call that lands on a is retried on b. (a is avoided for a second after its
      // connection broke, so wait that out first.)
      await new Promise((r) => setTimeout(r, 1100));
      let retried = false;
      for (let i = 0; i < 10 && !retried; i++) {
        const before = { ...runs };
        assert.equal(await client.call('flaky', 'op', null, { idempotent: true }), 'b');
        retried = runs.a === before.a + 1 && runs.b === before.b + 1;
        if (!retried) await new Promise((r) => setTimeout(r, 1100));
      }
      assert.ok(retried, 'an idempotent call ran on a, then on b');
    },
  );

  test(
    'a network partition between two peers: detected, calls fail over, a non-idempotent call runs at most once',
    { timeout: 30_000 },
    async () => {
      const store = new MemoryStore();
      const port = await freePort();
      // a is reachable only through a fault proxy; b directly.
      const a = await node(store, { id: 'pa', advertise: `127.0.0.1:${port}` });
      const proxy = await startFaultProxy({ target: a.boundAddress, port });
      const b = await node(store, { id: 'pb' });
      const client = await node(store);
      const runs = { pa: 0, pb: 0 };
      for (const [n, bus] of [
        ['pa', a],
        ['pb', b],
      ] as const) {
        await bus.serve('part', {
          op: () => ++runs[n],
          hang: (_m, ctx) => {
            runs[n]++;
            return new Promise((resolve) => onAbort(ctx.signal, () => resolve(null)));
          },
        });
      }
      const view = await client.instances('part');
      await waitFor(() => view.size === 2, { what: 'both instances' });
      // Calls in flight on both, then the network between client and a goes dark.
      const calls = [0, 1, 2, 3].map(() =>
        client.call('part', 'hang', null, { timeout: 20_000 }).catch((e: unknown) => e),
      );
      await waitFor(() => runs.pa >= 1 && runs.pb >= 1, { what: 'hangs running on both' });
      const before = { ...runs };
      const cutAt = performance.now();
      proxy.blackhole();
      const first = await Promise.race(calls);
      const detectedMs = performance.now() - cutAt;
      assert.ok(isMusterError(first, 'MUSTER_PEER_LOST'), String(first));
      assert.ok(detectedMs <= 2500, `partition detected after ${detectedMs.toFixed(0)} ms`);
      // No duplicate effect: the lost non-idempotent calls were not re-run anywhere.
      assert.deepEqual(runs, before);
      // Calls fail over to b (a's address is avoided; once tried again it cannot connect, nothing runs there).
      for (let i = 0; i < 5; i++) await client.call('part', 'op', null, { timeout: 5000 });
      assert.equal(runs.pa, before.pa);
      await proxy.close();
    },
  );

  test(
    'oversized frame: coded error before sending, and from a receiver with a smaller limit',
    { timeout: 20_000 },
    async () => {
      const store = new MemoryStore();
      const server = await node(store, { maxFrameBytes: 1024 });
      const client = await node(store, { maxFrameBytes: 64 * 1024 });
      await server.serve('svc', { echo: (m) => m, big: () => 'x'.repeat(4096) });
      // The receiver skips the frame and answers for it; the connection lives on.
      const e = await rejectsWith(client.call('svc', 'echo', 'y'.repeat(2000)), 'MUSTER_FRAME_TOO_LARGE');
      assert.equal(e.details.limit, 1024);
      assert.equal(await client.call('svc', 'echo', 'small'), 'small');
      // The sender refuses before sending.
      await rejectsWith(client.call('svc', 'echo', 'z'.repeat(70 * 1024)), 'MUSTER_FRAME_TOO_LARGE');
      // A result over the server's limit.
      await rejectsWith(client.call('svc', 'big'), 'MUSTER_FRAME_TOO_LARGE');
      assert.equal(await client.call('svc', 'echo', 'still'), 'still');
      assert.equal(client.peers().size, 1);
    },
  );

  test(
    'garbage bytes: connection closed with a logged MUSTER_PROTOCOL; the node serves on',
    { timeout: 20_000 },
    async () => {
      const store = new MemoryStore();
      const logged: { code?: string }[] = [];
      const server = await node(store, {
        logger: { ...quiet, warn: (obj: { code?: string }) => logged.push(obj) },
      });
      const client = await node(store);
      await server.serve('svc', { echo: (m) => m });
      const [host, port] = [server.address.split(':')[0] as string, Number(server.address.split(':')[1])];
      // Garbage before any hello.
      const raw = connect({ host, port });
      raw.resume();
      await once(raw, 'connect');
      raw.write(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
      await once(raw, 'close');
      // Garbage after a valid hello: an unknown frame kind.
      const raw2 = connect({ host, port });
      raw2.resume();
      await once(raw2, 'connect');
      raw2.write(encodeFrame(FrameKind.Hello, 0, { v: PROTOCOL_VERSION, node: 'x', address: '127.0.0.1:1' }));
      raw2.write(Buffer.from([0, 0, 0, 2, 99, 0, 0, 0, 1, 1, 2]));
      await once(raw2, 'close');
      // A request with call id 0 (the connection's own id, never a call's).
      const raw3 = connect({ host, port });
      raw3.resume();
      await once(raw3, 'connect');
      raw3.write(encodeFrame(FrameKind.Hello, 0, { v: PROTOCOL_VERSION, node: 'y', address: '127.0.0.1:1' }));
      raw3.write(encodeFrame(FrameKind.Request, 0, { s: 'svc', m: 'echo', a: 1 }));
      await once(raw3, 'close');
      await waitFor(() => logged.filter((l) => l.code === 'MUSTER_PROTOCOL').length >= 3, {
        what: 'three MUSTER_PROTOCOL log lines',
      });
      assert.equal(await client.call('svc', 'echo', 1), 1);
    },
  );

  test(
    'shared token: a peer without it is refused with MUSTER_PERMISSION_DENIED',
    { timeout: 20_000 },
    async () => {
      const store = new MemoryStore();
      const server = await node(store, { token: 'sesame' });
      const good = await node(store, { token: 'sesame' });
      const bad = await node(store, { token: 'wrong' });
      await server.serve('svc', { echo: (m) => m });
      assert.equal(await good.call('svc', 'echo', 1), 1);
      await rejectsWith(bad.call('svc', 'echo', 1), 'MUSTER_PERMISSION_DENIED');
    },
  );

  test(
    'a peer that never reads: MUSTER_OVERLOADED at the queue bound, other peers unaffected',
    { timeout: 30_000 },
    async () => {
      const store = new MemoryStore();
      const client = await node(store, { maxQueueBytes: 256 * 1024 });
      const healthy = await node(store);
      await healthy.serve('ok', { echo: (m) => m });
      // A stuck peer: answers the hello and heartbeats, never reads again.
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
      const member = await join(store, { service: 'stuck', id: 'stuck', address: `127.0.0.1:${port}` });
      const payload = 'p'.repeat(32 * 1024);
      let overloaded: MusterError | undefined;
      const pending: Promise<unknown>[] = [];
      for (let i = 0; i < 2000 && overloaded === undefined; i++) {
        const p = client.call('stuck', 'x', payload, { timeout: 20_000 });
        pending.push(p.catch(() => undefined));
        await Promise.race([
          p.catch((err: unknown) => {
            if (isMusterError(err, 'MUSTER_OVERLOADED')) overloaded = err;
          }),
          new Promise((r) => setImmediate(r)),
        ]);
      }
      assert.ok(overloaded, 'a call was refused with MUSTER_OVERLOADED');
      assert.equal(overloaded.details.sent, false);
      // Others are unaffected: the healthy service answers at once.
      const started = performance.now();
      assert.equal(await client.call('ok', 'echo', 'fine'), 'fine');
      assert.ok(performance.now() - started < 500);
      await member.leave();
      for (const s of sockets) s.destroy();
      stuck.close();
      await Promise.all(pending);
    },
  );
});
