/**
 * Maintenance on `muster serve` with etcd's own etcdctl (issue 13 §3): snapshot save and
 * `--restore`, hashkv, defrag, alarms recorded durably, the space quota raising NOSPACE (writes
 * refused, reads and deletes served), and crashes at the new durable steps (MUSTER_CRASH_AT).
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, describe, test } from 'node:test';
import { isMusterError } from '../../src/errors.js';
import { startServer } from '../../src/server/index.js';
import { ETCD_INSTALL_HINT, needBinary, waitFor } from '../../src/testing/index.js';

const bin = new URL('../../../bin/muster.js', import.meta.url).pathname;
const T = { timeout: 90_000 };
const cleanups: (() => unknown)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'muster-maint-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function etcdctl(endpoint: string, ...args: string[]): Promise<{ ok: boolean; out: string }> {
  try {
    const { stdout, stderr } = await promisify(execFile)('etcdctl', ['--endpoints', endpoint, ...args], {
      timeout: 30_000,
      env: { ...process.env, ETCDCTL_API: '3' },
    });
    return { ok: true, out: stdout + stderr };
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string };
    return { ok: false, out: `${e.stdout ?? ''}${e.stderr ?? ''}` };
  }
}

/** `muster serve` as a process; resolves its address, or how it ended when it exits first. */
function serveProcess(
  args: string[],
  crashAt?: string,
): Promise<{
  child: ChildProcess;
  address?: string;
  exit?: { code: number | null; signal: string | null };
  out: string;
}> {
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env.MUSTER_CRASH_AT;
  if (crashAt !== undefined) env.MUSTER_CRASH_AT = crashAt;
  const child = spawn(
    process.execPath,
    [bin, 'serve', '--listen', '127.0.0.1:0', '--log-level', 'warn', ...args],
    {
      stdio: 'pipe',
      env,
    },
  );
  cleanups.push(() => child.kill('SIGKILL'));
  let out = '';
  child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`muster serve neither started nor exited: ${out}`)),
      20_000,
    );
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /listening on etcd:\/\/([\d.]+:\d+)/.exec(out);
      if (m !== null) {
        clearTimeout(timer);
        resolve({ child, address: m[1] as string, out });
      }
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ child, exit: { code, signal }, out });
    });
  });
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const gone = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await gone;
}

describe('maintenance with etcdctl', { skip: needBinary('etcdctl', ETCD_INSTALL_HINT) }, () => {
  test('snapshot save, restore into an empty data directory; hashkv, defrag, status', T, async () => {
    const server = await startServer({ dataDir: tempDir(), listen: '127.0.0.1:0' });
    cleanups.push(() => server.close());
    const ep = `${server.host}:${server.port}`;
    for (let i = 0; i < 20; i++) await server.store.put(`/m/${i}`, `v${i}`);
    await server.store.delete('/m/3');
    const file = join(tempDir(), 'snap.db');
    const saved = await etcdctl(ep, 'snapshot', 'save', file);
    assert.ok(saved.ok && existsSync(file), saved.out);
    assert.match(saved.out, /Snapshot saved at/);
    const hash = await etcdctl(ep, 'endpoint', 'hashkv', '-w', 'json');
    assert.ok(hash.ok, hash.out);
    const hashValue = (JSON.parse(hash.out) as { HashKV: { hash: number } }[])[0]?.HashKV.hash;
    const defrag = await etcdctl(ep, 'defrag');
    assert.ok(defrag.ok, defrag.out);
    assert.match(defrag.out, /Finished defragmenting/);
    const status = await etcdctl(ep, 'endpoint', 'status');
    assert.ok(status.ok, status.out);

    const dir = tempDir();
    const restored = await startServer({ dataDir: dir, listen: '127.0.0.1:0', restore: file });
    try {
      assert.equal(restored.store.revision, server.store.revision);
      assert.equal((await restored.store.range('/m/')).count, 19);
      const again = await etcdctl(`${restored.host}:${restored.port}`, 'endpoint', 'hashkv', '-w', 'json');
      assert.equal((JSON.parse(again.out) as { HashKV: { hash: number } }[])[0]?.HashKV.hash, hashValue);
    } finally {
      await restored.close();
    }
    // A data directory that holds data is never overwritten; a file that is no snapshot is refused.
    await assert.rejects(
      startServer({ dataDir: dir, listen: '127.0.0.1:0', restore: file }),
      (e: unknown) => isMusterError(e, 'MUSTER_INVALID_ARGUMENT') && /already holds data/.test(e.message),
    );
    await assert.rejects(
      startServer({ dataDir: tempDir(), listen: '127.0.0.1:0', restore: bin }),
      (e: unknown) => isMusterError(e, 'MUSTER_CORRUPT_DATA'),
    );
  });

  test(
    'a quota raises NOSPACE: puts refused, reads and deletes served; the alarm survives a restart; disarm',
    T,
    async () => {
      const dir = tempDir();
      const started = await serveProcess(['--data-dir', dir, '--quota-backend-bytes', String(1536 * 1024)]);
      assert.ok(started.address, started.out);
      let ep = started.address;
      const big = 'x'.repeat(100 * 1024); // under the 128 KiB limit of one argument
      for (let i = 0; i < 12; i++) await etcdctl(ep, 'put', `/q/${i}`, big);
      await waitFor(async () => (await etcdctl(ep, 'alarm', 'list')).out.includes('NOSPACE'), {
        timeoutMs: 10_000,
      });
      const refused = await etcdctl(ep, 'put', '/q/more', 'v');
      assert.equal(refused.ok, false);
      assert.match(refused.out, /database space exceeded/);
      assert.ok((await etcdctl(ep, 'get', '/q/0', '--print-value-only')).out.startsWith('xxx'));
      assert.ok((await etcdctl(ep, 'del', '/q/11')).ok);
      await stop(started.child);
      // Raised durably: still raised after a restart (without a quota now).
      const again = await serveProcess(['--data-dir', dir]);
      ep = again.address as string;
      assert.match((await etcdctl(ep, 'alarm', 'list')).out, /alarm:NOSPACE/);
      assert.match((await etcdctl(ep, 'put', '/q/more', 'v')).out, /database space exceeded/);
      assert.ok((await etcdctl(ep, 'alarm', 'disarm')).ok);
      assert.ok((await etcdctl(ep, 'put', '/q/more', 'v')).ok);
      await stop(again.child);
    },
  );

  test('crash points: restore (snapshot steps) and the alarm file', T, async () => {
    // A snapshot to restore.
    const src = await startServer({ dataDir: tempDir(), listen: '127.0.0.1:0' });
    for (let i = 0; i < 5; i++) await src.store.put(`/c/${i}`, `v${i}`);
    const file = join(tempDir(), 'snap.db');
    assert.ok((await etcdctl(`${src.host}:${src.port}`, 'snapshot', 'save', file)).ok);
    await src.close();
    // Killed before the rename: nothing restored, restoring again works.
    let dir = tempDir();
    let r = await serveProcess(['--data-dir', dir, '--restore', file], 'snapshot.tmp-synced');
    assert.equal(r.exit?.signal, 'SIGKILL', r.out);
    r = await serveProcess(['--data-dir', dir, '--restore', file]);
    assert.ok(r.address, r.out);
    assert.match((await etcdctl(r.address, 'get', '/c/4', '--print-value-only')).out, /v4/);
    await stop(r.child);
    // Killed after the rename: the data is there; restoring again is refused, starting serves it.
    dir = tempDir();
    r = await serveProcess(['--data-dir', dir, '--restore', file], 'snapshot.renamed');
    assert.equal(r.exit?.signal, 'SIGKILL', r.out);
    r = await serveProcess(['--data-dir', dir, '--restore', file]);
    assert.ok(r.exit !== undefined && r.exit.code !== 0 && /already holds data/.test(r.out), r.out);
    r = await serveProcess(['--data-dir', dir]);
    assert.match((await etcdctl(r.address as string, 'get', '/c/4', '--print-value-only')).out, /v4/);
    await stop(r.child);
    // The alarm file: killed before its rename → the old list; after → the new one.
    for (const [point, raised] of [
      ['alarms.tmp-synced', false],
      ['alarms.renamed', true],
    ] as const) {
      dir = tempDir();
      r = await serveProcess(['--data-dir', dir], point);
      const raise = await etcdctl(r.address as string, 'alarm', 'list'); // nothing to write yet
      assert.ok(raise.ok, raise.out);
      await promisify(execFile)(process.execPath, [
        '-e',
        `const g=require(${JSON.stringify(new URL('../../../node_modules/@grpc/grpc-js/build/src/index.js', import.meta.url).pathname)});` +
          `const l=require(${JSON.stringify(new URL('../../../node_modules/@grpc/proto-loader/build/src/index.js', import.meta.url).pathname)});` +
          `const p=g.loadPackageDefinition(l.loadSync(require.resolve('etcd3/proto/rpc.proto',{paths:[${JSON.stringify(new URL('../../../', import.meta.url).pathname)}]}),{keepCase:true}));` +
          `const c=new p.etcdserverpb.Maintenance('${r.address as string}',g.credentials.createInsecure());` +
          `c.Alarm({action:1,memberID:0,alarm:1},()=>process.exit(0));setTimeout(()=>process.exit(0),3000);`,
      ]);
      await new Promise((res) =>
        r.child.exitCode !== null || r.child.signalCode !== null ? res(null) : r.child.once('exit', res),
      );
      assert.equal(r.child.signalCode, 'SIGKILL', `${point}: ${r.out}`);
      const next = await serveProcess(['--data-dir', dir]);
      const list = await etcdctl(next.address as string, 'alarm', 'list');
      assert.equal(list.out.includes('NOSPACE'), raised, `${point}: ${list.out}`);
      await stop(next.child);
    }
  });
});
