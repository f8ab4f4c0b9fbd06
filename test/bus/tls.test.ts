/**
 * TLS between bus peers, on real sockets with throw-away certificates (src/testing/tls.ts): calls and
 * publications work over TLS (mutual too), and every mismatch is a coded `MUSTER_TLS_HANDSHAKE`.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { TLSSocket } from 'node:tls';
import { before, describe, test } from 'node:test';
import { type BusTlsOptions, openBus, readBusTlsFiles, type Bus } from '../../src/bus/index.js';
import { runDaemon } from '../../src/daemon/index.js';
import { MemoryStore, openStore } from '../../src/store/index.js';
import {
  makeTestCertificates,
  startTempServe,
  type TestCertificates,
  waitFor,
} from '../../src/testing/index.js';
import { busNodes, quiet, rejectsWith } from './fixtures/nodes.js';

const { node } = busNodes({ connectTimeout: 3000 });

/** TLS material from one CA (`a`) and from another, unrelated CA (`b`). */
let a: BusTlsOptions;
let b: BusTlsOptions;
let aFiles: TestCertificates;
let bFiles: TestCertificates;
before(() => {
  const load = (): BusTlsOptions => {
    const c = makeTestCertificates();
    if (aFiles === undefined) aFiles = c;
    else bFiles = c;
    return {
      cert: readFileSync(c.serverCertFile),
      key: readFileSync(c.serverKeyFile),
      ca: readFileSync(c.caFile),
    };
  };
  a = load();
  b = load();
});

describe('bus TLS', () => {
  test('calls and publications work over mutual TLS', { timeout: 30_000 }, async () => {
    const store = new MemoryStore();
    const tls = { ...a, mutual: true };
    const server = await node(store, { tls, token: 's3cret' });
    const client = await node(store, { tls, token: 's3cret' });
    await server.serve('echo', { echo: (m, ctx) => ({ m, caller: ctx.caller.node }) });
    assert.deepEqual(await client.call('echo', 'echo', 'hi'), { m: 'hi', caller: client.id });
    const conn = [...client.peers().values()][0];
    assert.ok(conn?.socket instanceof TLSSocket && conn.socket.encrypted, 'the connection is TLS');
    assert.equal(conn.socket.authorized, true);

    const got: unknown[] = [];
    await server.subscribe('jobs', (m) => {
      got.push(m);
    });
    for (let i = 0; i < 10; i++) await client.publish('jobs', i);
    const acked = await client.publish('jobs', 'last', { ack: true, timeout: 5000 });
    assert.equal(acked.sent, 1);
    await waitFor(() => got.length === 11, { what: 'all 11 publications over TLS' });
    assert.deepEqual(got, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 'last']);
  });

  test('a TLS connection outlives the connect timeout', { timeout: 30_000 }, async () => {
    const store = new MemoryStore();
    const server = await node(store, { tls: a, connectTimeout: 300 });
    const client = await node(store, { tls: a, connectTimeout: 300 });
    await server.serve('long', { who: () => 'server' });
    assert.equal(await client.call('long', 'who'), 'server');
    const conn = [...client.peers().values()][0];
    await new Promise((r) => setTimeout(r, 900));
    assert.equal(await client.call('long', 'who'), 'server');
    assert.equal([...client.peers().values()][0], conn, 'the same connection');
    assert.equal(conn?.state, 'open');
  });

  test('a plain peer and a TLS peer refuse each other with a coded error', { timeout: 30_000 }, async () => {
    const store = new MemoryStore();
    const secure = await node(store, { tls: a });
    const plain = await node(store);
    await secure.serve('s', { who: () => 'secure' });
    await plain.serve('p', { who: () => 'plain' });
    // A plain dialer reads the TLS node's plain refusal.
    const e1 = await rejectsWith(plain.call('s', 'who'), 'MUSTER_TLS_HANDSHAKE');
    assert.match(e1.message, /uses TLS/);
    // A TLS dialer sees its handshake fail on the plain node.
    await rejectsWith(secure.call('p', 'who'), 'MUSTER_TLS_HANDSHAKE');
    // Both nodes still serve peers of their own kind.
    const plain2 = await node(store);
    assert.equal(await plain2.call('p', 'who'), 'plain');
    const secure2 = await node(store, { tls: a });
    assert.equal(await secure2.call('s', 'who'), 'secure');
  });

  test('a peer whose certificate is from another CA is refused', { timeout: 30_000 }, async () => {
    const store = new MemoryStore();
    const server = await node(store, { tls: { ...a, mutual: true } });
    await server.serve('s', { who: () => 'server' });
    // The dialer does not trust the server's CA.
    const untrusting = await node(store, { tls: { ...a, ca: b.ca as Buffer } });
    const e = await rejectsWith(untrusting.call('s', 'who'), 'MUSTER_TLS_HANDSHAKE');
    assert.match(e.message, /certificate/);
    // The dialer trusts the server, but the mutual-TLS server does not trust the dialer's certificate.
    const stranger = await node(store, { tls: { ...b, ca: a.ca as Buffer } });
    const e2 = await rejectsWith(stranger.call('s', 'who'), 'MUSTER_TLS_HANDSHAKE');
    assert.match(e2.message, /does not trust/);
    // A peer with the right material still gets through.
    const friend = await node(store, { tls: a });
    assert.equal(await friend.call('s', 'who'), 'server');
  });

  test('unusable TLS options are refused at open', { timeout: 10_000 }, async () => {
    const store = new MemoryStore();
    await rejectsWith(
      openBus(store, { logger: quiet, tls: { cert: '', key: '' } }),
      'MUSTER_INVALID_ARGUMENT',
    );
    await rejectsWith(
      openBus(store, { logger: quiet, tls: { cert: a.cert, key: b.key } }),
      'MUSTER_INVALID_ARGUMENT',
    );
  });

  test(
    "certificates are reloaded on the daemon's reload (POST /v1/reload) and used for new connections",
    { timeout: 30_000 },
    async () => {
      const store = new MemoryStore();
      // The server's certificate files: first from CA a, then renewed from CA b.
      const dir = mkdtempSync(join(tmpdir(), 'muster-bus-reload-'));
      const files = { cert: join(dir, 'cert.pem'), key: join(dir, 'key.pem') };
      copyFileSync(aFiles.serverCertFile, files.cert);
      copyFileSync(aFiles.serverKeyFile, files.key);
      let server: Bus | undefined;
      const daemon = await runDaemon(
        {
          name: 'bus',
          handleSignals: false,
          logger: pino({ level: 'silent' }),
          admin: { listen: '127.0.0.1:0' },
        },
        async () => {
          const bus = await openBus(store, { logger: quiet, tls: await readBusTlsFiles(files) });
          server = bus;
          await bus.serve('who', { who: () => 'server' });
          return {
            stop: () => bus.close(),
            reload: async () => ({ tls: bus.reloadTls(await readBusTlsFiles(files)) }),
          };
        },
      );
      try {
        const reload = (): Promise<Response> =>
          fetch(`${daemon.ctx.admin.url}/v1/reload`, { method: 'POST' });
        // Clients that trust only CA a, or only CA b.
        const trustsA = await node(store, { tls: a });
        const trustsB = await node(store, { tls: b });
        assert.equal(await trustsA.call('who', 'who'), 'server');
        await rejectsWith(trustsB.call('who', 'who'), 'MUSTER_TLS_HANDSHAKE');
        const before = trustsA.peers().get(server?.address as string);

        copyFileSync(bFiles.serverCertFile, files.cert);
        copyFileSync(bFiles.serverKeyFile, files.key);
        const res = await reload();
        assert.equal(res.status, 200);
        const body = (await res.json()) as { tls?: { subject: string; fingerprint256: string } };
        assert.match(body.tls?.fingerprint256 ?? '', /^[0-9A-F:]+$/);

        // New connections present the renewed certificate…
        assert.equal(await trustsB.call('who', 'who'), 'server');
        const lateA = await node(store, { tls: a });
        await rejectsWith(lateA.call('who', 'who'), 'MUSTER_TLS_HANDSHAKE');
        // …while an open connection keeps its session.
        assert.equal(await trustsA.call('who', 'who'), 'server');
        assert.equal(trustsA.peers().get(server?.address as string), before, 'the same connection');

        // Bad material is refused with a coded error and changes nothing.
        writeFileSync(files.key, 'not a key');
        const bad = await reload();
        assert.equal(bad.status, 400, await bad.text());
        const lateB = await node(store, { tls: b });
        assert.equal(await lateB.call('who', 'who'), 'server', 'still the renewed certificate');
        // TLS cannot be switched on by a reload, nor `mutual` changed.
        const plain = await node(store);
        assert.throws(() => plain.reloadTls(b), /without TLS/);
        assert.throws(() => server?.reloadTls({ ...b, mutual: true }), /mutual/);
      } finally {
        await daemon.stop();
      }
    },
  );

  test('muster bus call takes the TLS options', { timeout: 60_000 }, async () => {
    const serve = await startTempServe();
    const store = await openStore(serve.url);
    try {
      const server = await openBus(store, { logger: quiet, tls: { ...a, mutual: true } });
      try {
        await server.serve('cli-tls', { echo: (m) => m });
        const bin = new URL('../../../bin/muster.js', import.meta.url).pathname;
        const run = (
          args: readonly string[],
          env: Record<string, string> = {},
        ): Promise<{ status: number | null; stdout: string; stderr: string }> => {
          const child = spawn(
            process.execPath,
            [bin, 'bus', 'call', 'cli-tls', 'echo', '{"x":1}', '--store', serve.url, ...args],
            {
              stdio: ['ignore', 'pipe', 'pipe'],
              env: { ...process.env, ...env },
            },
          );
          let stdout = '';
          let stderr = '';
          child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
          child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
          return new Promise((resolve) =>
            child.once('close', (status) => resolve({ status, stdout, stderr })),
          );
        };
        const flags = ['--tls-cert', aFiles.serverCertFile, '--tls-key', aFiles.serverKeyFile];
        const ok = await run([...flags, '--tls-ca', aFiles.caFile]);
        assert.equal(ok.status, 0, ok.stderr);
        assert.deepEqual(JSON.parse(ok.stdout), { x: 1 });
        // The same through the environment.
        const viaEnv = await run([], {
          MUSTER_BUS_TLS_CERT: aFiles.serverCertFile,
          MUSTER_BUS_TLS_KEY: aFiles.serverKeyFile,
          MUSTER_BUS_TLS_CA: aFiles.caFile,
        });
        assert.equal(viaEnv.status, 0, viaEnv.stderr);
        const plain = await run([]);
        assert.equal(plain.status, 1);
        assert.match(plain.stderr, /^MUSTER_TLS_HANDSHAKE: /);
        const noKey = await run(['--tls-cert', aFiles.serverCertFile]);
        assert.equal(noKey.status, 1);
        assert.match(noKey.stderr, /^MUSTER_INVALID_ARGUMENT: .*--tls-key/);
        const missing = await run([...flags, '--tls-ca', `${aFiles.dir}/nope.pem`]);
        assert.equal(missing.status, 1);
        assert.match(missing.stderr, /^MUSTER_INVALID_ARGUMENT: cannot read --tls-ca/);
      } finally {
        await server.close();
      }
    } finally {
      await store.close();
      await serve.close();
    }
  });
});
