import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as net from 'node:net';
import { createInterface } from 'node:readline';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Agent } from 'undici';
import { openStore, type Store } from '../../src/store/index.js';
import { startTempServe, waitFor, type TempServe } from '../../src/testing/index.js';
import { call, keyFor, ownOnePartition, startBackend, type Backend } from './helpers.js';

const BIN = fileURLToPath(new URL('../../../bin/muster.js', import.meta.url));
const SVC = '/muster/services/rl/';
const COUNT = 4;

interface Running {
  child: ChildProcess;
  listen: string;
  lines: string | undefined;
  admin: string;
  token: string;
  exited: Promise<number | null>;
}

async function startMaster(
  dir: string,
  storeUrl: string,
  extra: Record<string, unknown> = {},
): Promise<Running> {
  const tokenFile = join(dir, `token-${(extra['service'] as string | undefined) ?? 'rl'}`);
  const configFile = join(dir, `proxy-${(extra['service'] as string | undefined) ?? 'rl'}.json`);
  writeFileSync(
    configFile,
    JSON.stringify({
      service: 'rl',
      listen: '127.0.0.1:0',
      key: 'header:x-key',
      workers: 1,
      drainTimeout: '30s',
      admin: { listen: '127.0.0.1:0', tokenFile },
      ...extra,
    }),
  );
  const child = spawn(process.execPath, [BIN, 'proxy', '--config', configFile, '--store', storeUrl], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, MUSTER_LOG_LEVEL: 'warn' },
  });
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const line = await new Promise<string>((resolve, reject) => {
    const rl = createInterface({ input: child.stdout as NodeJS.ReadableStream });
    rl.once('line', resolve);
    child.once('exit', (code) => reject(new Error(`proxy exited with ${code} before it was ready`)));
  });
  const info = JSON.parse(line) as { listen: string[]; lines?: string[]; admin: string };
  const { readFileSync } = await import('node:fs');
  return {
    child,
    listen: info.listen[0] as string,
    lines: info.lines?.[0],
    admin: info.admin,
    token: readFileSync(tokenFile, 'utf8').trim(),
    exited,
  };
}

async function admin(r: Running, method: string, path: string): Promise<Record<string, unknown>> {
  const res = await fetch(`${r.admin}${path}`, { method, headers: { authorization: `Bearer ${r.token}` } });
  assert.equal(res.status, 200, `${method} ${path}`);
  return (await res.json()) as Record<string, unknown>;
}

/**
 * Reloads in the steady-load test: 10 in `npm test`; the soak is 50
 * (`MUSTER_PROXY_RELOADS=50 node scripts/test.mjs dist/test/proxy/reload`, about 2 minutes).
 */
const RELOADS = Number(process.env['MUSTER_PROXY_RELOADS'] ?? '10');

describe('proxy master: zero-downtime reload', { timeout: Math.max(180_000, RELOADS * 6000) }, () => {
  let serve: TempServe;
  let store: Store;
  let backend: Backend;
  const dir = mkdtempSync(join(tmpdir(), 'muster-proxy-reload-'));
  const running: Running[] = [];

  before(async () => {
    serve = await startTempServe();
    store = await openStore(serve.url);
    backend = await startBackend('b');
    await store.put(`${SVC}spec`, JSON.stringify({ partitions: COUNT }));
    for (let p = 0; p < COUNT; p++) {
      await store.put(
        `${SVC}owners/${p}`,
        JSON.stringify({ instance: 'b', since: '', address: backend.address }),
      );
    }
  });
  after(async () => {
    for (const r of running) {
      r.child.kill('SIGTERM');
      await r.exited;
    }
    await backend.close();
    await store.close();
    await serve.close();
  });

  test(`${RELOADS} reloads under steady load (GET and POST, keep-alive) fail no request; a killed worker is replaced`, async () => {
    const r = await startMaster(dir, serve.url);
    running.push(r);
    const agent = new Agent({ connections: 16 });
    let stop = false;
    let ok = 0;
    const failures: string[] = [];
    const loops = Array.from({ length: 6 }, async (_, i) => {
      const key = keyFor(i % COUNT, COUNT);
      while (!stop) {
        const post = i % 2 === 1;
        try {
          const a = await call(
            agent,
            r.listen,
            post ? '/echo' : '/x',
            post ? { key, method: 'POST', body: `n${ok}` } : { key },
          );
          if (a.status === 200) ok++;
          else failures.push(`${a.status} ${a.text}`);
        } catch (err) {
          failures.push(String(err));
        }
      }
    });
    const pids = new Set<number>();
    for (let i = 0; i < RELOADS; i++) {
      const before = ok;
      await waitFor(() => ok >= before + 50, { what: 'requests flow', timeoutMs: 20_000 });
      const res = await admin(r, 'POST', '/v1/reload');
      for (const pid of res['workers'] as number[]) pids.add(pid);
    }
    assert.equal(pids.size, RELOADS, 'each reload started a new worker');
    // crash: SIGKILL the current worker; the master replaces it (requests in flight on it may fail,
    // so the load stops first)
    stop = true;
    await Promise.all(loops);
    assert.deepEqual(
      failures,
      [],
      `${failures.length} of ${ok + failures.length} requests failed during reloads`,
    );
    const status = (await admin(r, 'GET', '/v1/workers')) as {
      workers: { pid: number; state: string }[];
      reloads: number;
    };
    assert.equal(status.reloads, RELOADS);
    const current = status.workers.find((w) => w.state === 'ready');
    assert.ok(current);
    process.kill(current.pid, 'SIGKILL');
    await waitFor(
      async () => {
        const s = (await admin(r, 'GET', '/v1/workers')) as { workers: { pid: number; state: string }[] };
        return s.workers.some((w) => w.state === 'ready' && w.pid !== current.pid);
      },
      { what: 'a replacement worker', timeoutMs: 20_000, intervalMs: 100 },
    );
    // SIGHUP reloads too (through the daemon runtime)
    process.kill(r.child.pid as number, 'SIGHUP');
    await waitFor(
      async () => ((await admin(r, 'GET', '/v1/workers')) as { reloads: number }).reloads === RELOADS + 1,
      { what: 'SIGHUP reload', timeoutMs: 20_000, intervalMs: 100 },
    );
    const after = await call(agent, r.listen, '/x', { key: 'z' });
    assert.equal(after.status, 200);
    const metrics = await (
      await fetch(`${r.admin}/v1/metrics`, { headers: { authorization: `Bearer ${r.token}` } })
    ).text();
    assert.match(metrics, new RegExp(`muster_proxy_reloads_total ${RELOADS + 1}\\b`));
    assert.match(metrics, /muster_proxy_requests_total\{backend="127\.0\.0\.1:\d+",status="200"\}/);
    assert.equal((await fetch(`${r.admin}/v1/workers`)).status, 401, 'the admin API needs the token');
    await agent.close();
  });

  test('1,000 held long-polls survive a reload (held past the drain timeout) and are answered once the owner is back', async () => {
    // The owner goes before the master starts, so its workers' first listing already lacks it: deleted
    // after the start, the first polls could reach the owner before the watch event and never be held.
    await store.delete(`${SVC}owners/0`);
    const r = await startMaster(join(dir), serve.url, {
      hold: { releaseRate: 2000, maxPerDestination: 5000 },
      // shorter than the hold: the drain must not cut held requests (they end by their own deadline)
      drainTimeout: '1s',
    });
    running.push(r);
    const key = keyFor(0, COUNT);
    const agent = new Agent({ connections: 2000 });
    const n = 1000;
    const polls = Array.from({ length: n }, () =>
      call(agent, r.listen, '/poll?ms=10', { key }).then(
        (a) => a.status,
        (err: unknown) => String(err),
      ),
    );
    await waitFor(
      async () =>
        ((await admin(r, 'GET', '/v1/held')) as { total: Record<string, number> }).total['partition:0'] === n,
      { what: `${n} held`, timeoutMs: 30_000, intervalMs: 100 },
    );
    await admin(r, 'POST', '/v1/reload');
    const reloadedAt = Date.now();
    // past the old worker's drain timeout, its 1,000 held requests are still held (not cut)
    await waitFor(
      async () =>
        Date.now() - reloadedAt > 1500 &&
        ((await admin(r, 'GET', '/v1/held')) as { total: Record<string, number> }).total['partition:0'] === n,
      { what: `${n} still held after the drain timeout`, timeoutMs: 30_000, intervalMs: 100 },
    );
    await store.put(`${SVC}owners/0`, JSON.stringify({ instance: 'b', since: '', address: backend.address }));
    const statuses = await Promise.all(polls);
    assert.deepEqual(
      statuses.filter((s) => s !== 200),
      [],
    );
    await agent.close();
    // SIGTERM: the workers drain, the master exits 0
    r.child.kill('SIGTERM');
    assert.equal(await r.exited, 0);
  });

  test('line mode under the master: served by the workers; a client of a draining worker keeps its connection through a reload', async () => {
    const echo = net.createServer((socket) => {
      socket.on('error', () => socket.destroy());
      createInterface({ input: socket }).on('line', (line) => {
        const { seq } = JSON.parse(line) as { seq: number };
        socket.write(`${JSON.stringify({ seq, pid: 'echo' })}\n`);
      });
    });
    await new Promise<void>((resolve) => echo.listen(0, '127.0.0.1', resolve));
    const echoAddress = `127.0.0.1:${(echo.address() as net.AddressInfo).port}`;
    await ownOnePartition(store, 'ln', 'e', echoAddress);
    const r = await startMaster(dir, serve.url, {
      service: 'ln',
      lines: { listen: '127.0.0.1:0', key: 'k' },
    });
    running.push(r);
    assert.ok(r.lines !== undefined, 'the master prints its line listeners');
    const client = (): { socket: net.Socket; ask: (seq: number) => Promise<number> } => {
      const [host, port] = (r.lines as string).split(':') as [string, string];
      const socket = net.connect(Number(port), host);
      const waiting: ((seq: number) => void)[] = [];
      createInterface({ input: socket }).on('line', (line) =>
        waiting.shift()?.((JSON.parse(line) as { seq: number }).seq),
      );
      return {
        socket,
        ask: (seq) =>
          new Promise<number>((resolve) => {
            waiting.push(resolve);
            socket.write(`${JSON.stringify({ k: 'a', seq })}\n`);
          }),
      };
    };
    const a = client();
    assert.equal(await a.ask(1), 1);
    let closed = false;
    a.socket.once('close', () => (closed = true));
    await admin(r, 'POST', '/v1/reload');
    // the old worker drains: it no longer accepts, but its client keeps its connection and is served
    assert.equal(await a.ask(2), 2);
    const b = client();
    assert.equal(await b.ask(3), 3);
    const workers = (await admin(r, 'GET', '/v1/workers')) as { workers: { state: string }[] };
    assert.deepEqual(workers.workers.map((w) => w.state).sort(), ['draining', 'ready']);
    assert.equal(closed, false);
    // the last client of the old worker leaves: it exits
    a.socket.end();
    await waitFor(
      async () => ((await admin(r, 'GET', '/v1/workers')) as { workers: unknown[] }).workers.length === 1,
      { what: 'the old worker exited', timeoutMs: 20_000, intervalMs: 100 },
    );
    b.socket.destroy();
    r.child.kill('SIGTERM');
    assert.equal(await r.exited, 0);
    echo.close();
  });

  test('--listen-fd: a socket inherited as fd 3 (systemd socket activation) is served', async () => {
    // bound, not listening, in this process (as systemd would pass it): only the proxy's workers accept
    const create = (net as unknown as { _createServerHandle: (...a: unknown[]) => unknown })
      ._createServerHandle;
    const handle = create('127.0.0.1', 0, 4, undefined, 0) as {
      fd: number;
      close(): void;
      getsockname(o: Record<string, unknown>): void;
    };
    const name: Record<string, unknown> = {};
    handle.getsockname(name);
    const configFile = join(dir, 'fd.json');
    writeFileSync(
      configFile,
      JSON.stringify({ service: 'rl', listen: '127.0.0.1:1', key: 'header:x-key', workers: 1, admin: false }),
    );
    const child = spawn(
      process.execPath,
      [BIN, 'proxy', '--config', configFile, '--store', serve.url, '--listen-fd', '3'],
      {
        stdio: ['ignore', 'pipe', 'inherit', handle.fd],
        env: { ...process.env, MUSTER_LOG_LEVEL: 'warn' },
      },
    );
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    running.push({ child, listen: '', lines: undefined, admin: '', token: '', exited });
    const line = await new Promise<string>((resolve, reject) => {
      createInterface({ input: child.stdout as NodeJS.ReadableStream }).once('line', resolve);
      child.once('exit', (code) => reject(new Error(`proxy exited with ${code} before it was ready`)));
    });
    handle.close();
    const info = JSON.parse(line) as { listen: string[] };
    assert.equal(info.listen[0], `127.0.0.1:${String(name['port'])}`);
    const agent = new Agent();
    const r = await call(agent, info.listen[0], '/x', { key: 'k' });
    assert.equal(r.status, 200);
    await agent.close();
  });
});
