import assert from 'node:assert/strict';
import { fork } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import {
  ConfigRelay,
  initConfig,
  openConfig,
  publishConfig,
  readConfig,
  RelayClient,
} from '../../src/config/index.js';
import type { SpinnerMessage } from './fixtures/table-spinner.js';
import { isMusterError } from '../../src/errors.js';
import { type ClientMessage, encodeKv, LineReader } from '../../src/config/relay-wire.js';
import { PreciseClock } from '../../src/demo/precise-clock.js';
import { type KeyValue, MemoryStore } from '../../src/store/index.js';
import { hostBootId, hostMonotonicMs } from '../../src/util/host-clock.js';
import { waitFor } from '../../src/testing/index.js';
import { FaultyStore } from '../../src/testing/index.js';

const POLICY = { maxStaleness: '300ms', maxClockSkew: '10ms', minLeadTime: '400ms' };

describe('per-host relay', () => {
  test('handles behind a relay get every version, switch at the instant, and fail closed with the store', async () => {
    const store = new MemoryStore();
    await initConfig(store, 'r', POLICY);
    await publishConfig(store, 'r', 'a', { in: '400ms' });
    const faulty = new FaultyStore(store);
    const dir = mkdtempSync(join(tmpdir(), 'muster-relay-'));
    const path = join(dir, 'relay.sock');
    const relay = await ConfigRelay.start({ store: faulty, listen: path, maxStaleness: '300ms' });
    const clients = await Promise.all([1, 2, 3].map(() => RelayClient.connect(path)));
    const handles = clients.map((c) => openConfig<string>(c, 'r'));
    try {
      await Promise.all(handles.map((h) => h.ready()));
      await waitFor(() => handles.every((h) => safe(() => h.current().value) === 'a'), {
        timeoutMs: 5000,
        intervalMs: 5,
      });
      const v2 = await publishConfig(store, 'r', 'b', { in: '400ms' });
      await waitFor(() => handles.every((h) => h.timeline().versions.some((v) => v.version === v2.version)), {
        timeoutMs: 2000,
        intervalMs: 5,
      });
      await waitFor(() => Date.now() >= v2.activateAt, { timeoutMs: 2000, intervalMs: 5 });
      for (const h of handles) assert.equal(h.at(v2.activateAt).value, 'b');
      for (const h of handles) assert.equal(h.at(v2.activateAt - 1).value, 'a');

      faulty.pause();
      const pausedAt = Date.now();
      await waitFor(() => handles.every((h) => h.state === 'stale'), { timeoutMs: 3000, intervalMs: 5 });
      assert.ok(Date.now() - pausedAt <= 300 + 250, `stale only after ${Date.now() - pausedAt} ms`);
      for (const h of handles)
        assert.throws(
          () => h.current(),
          (e) => isMusterError(e, 'MUSTER_STALE_CONFIG'),
        );
      faulty.resume();
      await waitFor(() => handles.every((h) => h.state === 'fresh'), { timeoutMs: 5000, intervalMs: 5 });
      assert.equal(handles[0]?.current().value, 'b');

      await relay.close(); // the relay dies: its processes go stale too
      await waitFor(() => handles.every((h) => h.state === 'stale'), { timeoutMs: 3000, intervalMs: 5 });
    } finally {
      await Promise.all(handles.map((h) => h.close()));
      await Promise.all(clients.map((c) => c.close()));
      await relay.close();
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

function safe<T>(fn: () => T): T | undefined {
  try {
    return fn();
  } catch {
    return undefined;
  }
}

describe('switch event', () => {
  test('with switchWait, the switch handler never runs early and runs within milliseconds of the instant', async () => {
    const store = new MemoryStore();
    await initConfig(store, 's', POLICY);
    const precise = new PreciseClock();
    const h = openConfig<string>(store, 's', { clock: precise, switchWait: '20ms' });
    const late: number[] = [];
    h.on('switch', (s) => late.push(s.latenessMs));
    try {
      await h.ready();
      for (let i = 0; i < 3; i++) {
        await publishConfig(store, 's', `v${i}`, { in: '420ms' });
        await waitFor(() => late.length === i + 1, { timeoutMs: 3000, intervalMs: 5 });
      }
      // Never before the instant; punctual when the machine lets it (CI runs suites side by side).
      assert.ok(
        late.every((l) => l >= 0),
        `lateness ${late.join(', ')}`,
      );
      assert.ok(Math.min(...late) < 5, `lateness ${late.join(', ')}`);
    } finally {
      await h.close();
      await store.close();
    }
  });

  test('with switchWait, activations closer together than the settle time each fire once, in order, never early', async () => {
    const store = new MemoryStore();
    await initConfig(store, 'c', POLICY);
    const precise = new PreciseClock();
    const h = openConfig<string>(store, 'c', { clock: precise, switchWait: '20ms' });
    const seen: { version: number; late: number }[] = [];
    h.on('switch', (s) => seen.push({ version: s.version.version, late: s.latenessMs }));
    try {
      await h.ready();
      const at = Date.now() + 600;
      const a = await publishConfig(store, 'c', 'a', { at });
      const b = await publishConfig(store, 'c', 'b', { at: at + 8 }); // < SWITCH_SETTLE_MS later
      // A probe: switches fire in order, so once c's has fired, any repeat of a's or b's would have.
      const c = await publishConfig(store, 'c', 'c', { at: at + 300 });
      await waitFor(() => seen.some((s) => s.version === c.version), { timeoutMs: 3000, intervalMs: 5 });
      assert.deepEqual(
        seen.map((s) => s.version),
        [a.version, b.version, c.version],
        JSON.stringify(seen),
      );
      assert.ok(
        seen.every((s) => s.late >= 0),
        JSON.stringify(seen),
      );
    } finally {
      await h.close();
      await store.close();
    }
  });
});

/**
 * A scripted relay on a Unix socket: answers the first list with `kvs`, then never answers a read
 * again, and pushes a proof claiming "complete, just now" every 50 ms on every watch. Only a client
 * that shares the hello's clock may believe those proofs.
 */
async function scriptedRelay(path: string, kvs: readonly KeyValue[], revision: number, boot: string) {
  const sockets = new Set<Socket>();
  const timers = new Set<NodeJS.Timeout>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.write(`${JSON.stringify({ hello: { boot, mono: hostMonotonicMs() } })}\n`);
    let lists = 0;
    const reader = new LineReader((m) => {
      const msg = m as ClientMessage;
      if (msg.op === 'range' && lists++ === 0)
        socket.write(`${JSON.stringify({ id: msg.id, kvs: kvs.map((kv) => encodeKv(kv)), revision })}\n`);
      if (msg.op === 'watch') {
        const t = setInterval(() => {
          socket.write(
            `${JSON.stringify({ wid: msg.wid, proof: revision, age: 0, mono: hostMonotonicMs() })}\n`,
          );
        }, 50);
        timers.add(t);
      }
    });
    socket.on('data', (chunk) => reader.push(chunk));
    socket.on('error', () => undefined);
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  return {
    close: async () => {
      for (const t of timers) clearInterval(t);
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

describe('pushed proofs', () => {
  for (const shared of [true, false]) {
    test(`a relay ${shared ? 'sharing' : 'not sharing'} the clock: pushed proofs are ${shared ? 'believed' : 'ignored'}`, async () => {
      const store = new MemoryStore();
      await initConfig(store, 'p', POLICY);
      await publishConfig(store, 'p', 'a', { in: '400ms' });
      const listed = await store.range('/muster/config/p/');
      const dir = mkdtempSync(join(tmpdir(), 'muster-relay-'));
      const path = join(dir, 'relay.sock');
      const relay = await scriptedRelay(
        path,
        listed.kvs,
        listed.revision,
        shared ? (hostBootId() ?? '') : 'another-host',
      );
      const client = await RelayClient.connect(path);
      const h = openConfig<string>(client, 'p');
      try {
        await h.ready();
        assert.equal(client.sharesClock, shared);
        // Reads go unanswered; only pushed proofs can keep the handle fresh past maxStaleness (300 ms).
        const readyAt = Date.now();
        if (shared) {
          // A proof taken three maxStaleness periods after ready: the handle stayed proven meanwhile.
          await waitFor(() => (h.freshness().verifiedAt ?? 0) > readyAt + 900, {
            timeoutMs: 5000,
            intervalMs: 10,
            what: 'a pushed proof 900 ms after ready',
          });
          assert.equal(h.state, 'fresh');
          assert.ok(h.freshness().ageMs < 300, `proof age ${h.freshness().ageMs} ms`);
        } else {
          // Ignored proofs: the handle goes stale once maxStaleness passes without a read answered.
          await waitFor(() => h.state === 'stale', { timeoutMs: 5000, intervalMs: 10, what: 'stale' });
        }
      } finally {
        await h.close();
        await client.close();
        await relay.close();
        await store.close();
        rmSync(dir, { recursive: true, force: true });
      }
    });
  }

  test('a real relay keeps idle clients fresh through its shared table: no reads reach it', async () => {
    const store = new MemoryStore();
    await initConfig(store, 'q', POLICY);
    await publishConfig(store, 'q', 'a', { in: '400ms' });
    const dir = mkdtempSync(join(tmpdir(), 'muster-relay-'));
    const path = join(dir, 'relay.sock');
    const relay = await ConfigRelay.start({ store, listen: path, maxStaleness: '300ms' });
    const client = await RelayClient.connect(path);
    let reads = 0;
    const counting: typeof client = Object.create(client) as typeof client;
    counting.range = (selector, options) => (reads++, client.range(selector, options));
    counting.watch = (selector, options) => client.watch(selector, options);
    const h = openConfig<string>(counting, 'q');
    try {
      await h.ready();
      const after = reads; // the list
      const readyAt = Date.now();
      // Proven again more than three maxStaleness periods later, through the table alone.
      await waitFor(() => (h.freshness().verifiedAt ?? 0) > readyAt + 1000, {
        timeoutMs: 5000,
        intervalMs: 10,
        what: 'a proof 1 s after ready',
      });
      assert.equal(h.state, 'fresh');
      assert.equal(reads, after, 'a client reading the shared table sent verification reads');
    } finally {
      await h.close();
      await client.close();
      await relay.close();
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('shared table', () => {
  for (const tables of [true, false]) {
    test(`a process whose event loop is blocked ${tables ? 'holds a new version and stays fresh through the shared table' : 'holds nothing new without a table (control)'}`, async () => {
      const store = new MemoryStore();
      await initConfig(store, 't', POLICY);
      await publishConfig(store, 't', 'a', { in: '400ms' });
      const dir = mkdtempSync(join(tmpdir(), 'muster-relay-'));
      const path = join(dir, 'relay.sock');
      const relay = await ConfigRelay.start({ store, listen: path, maxStaleness: '300ms', tables });
      const child = fork(new URL('./fixtures/table-spinner.js', import.meta.url), [], {
        env: { ...process.env, MUSTER_RELAY: path, MUSTER_CONFIG: 't' },
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      });
      const next = (): Promise<SpinnerMessage> =>
        new Promise((resolve, reject) => {
          child.once('message', (m) => resolve(m as SpinnerMessage));
          child.once('exit', (code) => reject(new Error(`the spinner exited with ${code}`)));
        });
      try {
        const ready = await next();
        assert.deepEqual(ready, { t: 'ready', tables });
        const version = (await readConfig(store, 't')).versions.length + 1;
        const spinning = next();
        child.send({ t: 'spin', version, ms: 1500 });
        assert.deepEqual(await spinning, { t: 'spinning' }); // its event loop is blocked from now on
        const spun = next();
        const v = await publishConfig(store, 't', 'b', { in: '400ms' });
        assert.equal(v.version, version);
        const r = await spun;
        assert.ok(r.t === 'spun' && r.asked > 0);
        if (tables) {
          assert.equal(r.found, true, 'the new version never reached the blocked process');
          assert.equal(
            r.stale,
            0,
            `refused ${r.stale} of ${r.asked} calls while the relay was proving itself`,
          );
        } else {
          assert.equal(r.found, false, 'a blocked process without a table cannot have received anything');
          assert.ok(r.stale > 0, 'without a table, a blocked process must go stale after maxStaleness');
        }
      } finally {
        child.send('stop');
        await new Promise((resolve) => child.once('exit', resolve));
        await relay.close();
        await store.close();
        rmSync(dir, { recursive: true, force: true });
      }
    });
  }
});

describe('relay client connections', () => {
  test(
    'a peer that accepts but never says hello is given up on, and a client closed while connecting closes its socket',
    { timeout: 20_000 },
    async () => {
      const dir = mkdtempSync(join(tmpdir(), 'muster-relay-'));
      const path = join(dir, 'relay.sock');
      const store = new MemoryStore();
      await initConfig(store, 'h', POLICY);
      const relay = await ConfigRelay.start({ store, listen: path, maxStaleness: '300ms' });
      const client = await RelayClient.connect(path);
      const h = openConfig(client, 'h');
      const silentSockets = new Set<Socket>();
      const silent = createServer((s) => {
        silentSockets.add(s);
        s.on('close', () => silentSockets.delete(s));
      });
      try {
        await h.ready();
        await relay.close();
        // A stopped relay's socket still accepts: a silent server takes the path over.
        await new Promise<void>((resolve) => silent.listen(path, resolve));
        await assert.rejects(
          RelayClient.connect(path, { helloTimeout: '300ms' }),
          (e) => isMusterError(e, 'MUSTER_UNAVAILABLE') && /no hello/.test(e.message),
        );
        await waitFor(() => silentSockets.size > 0, { timeoutMs: 3000, intervalMs: 5 }); // the handle is reconnecting
        const closed = Promise.all([h.close(), client.close()]);
        const outcome = await Promise.race([
          closed.then(() => 'closed'),
          new Promise((resolve) => setTimeout(resolve, 1500, 'hung')),
        ]);
        assert.equal(outcome, 'closed');
        await waitFor(() => silentSockets.size === 0, { timeoutMs: 1000, intervalMs: 5 });
      } finally {
        await h.close();
        await client.close();
        for (const s of silentSockets) s.destroy();
        await new Promise<void>((resolve) => silent.close(() => resolve()));
        await store.close();
        rmSync(dir, { recursive: true, force: true });
      }
    },
  );
});
