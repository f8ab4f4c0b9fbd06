/** `muster config set --wait` and `timeline` with holders, as separate processes against `muster serve`. */
import assert from 'node:assert/strict';
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { type MusterServer, startServer } from '../../src/server/index.js';
import { openStore } from '../../src/store/index.js';

const bin = new URL('../../../bin/muster.js', import.meta.url).pathname;
const run = promisify(execFile);

describe('muster config set --wait (multi-process)', () => {
  let server: MusterServer;
  let dir: string;
  const watchers: ChildProcess[] = [];
  const muster = async (...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> => {
    try {
      const r = await run(process.execPath, [bin, ...args, '--store', server.url], {
        encoding: 'utf8',
        timeout: 60_000,
      });
      return { code: 0, stdout: r.stdout, stderr: r.stderr };
    } catch (err) {
      const e = err as { code: number; stdout: string; stderr: string };
      return { code: e.code, stdout: e.stdout, stderr: e.stderr };
    }
  };
  /** Starts `muster config watch` and resolves once it has recorded its holding ('ready'). */
  const watcher = (instance: string, ttl = '3s'): Promise<ChildProcess> =>
    new Promise((resolve, reject) => {
      const child = spawn(
        process.execPath,
        [
          bin,
          'config',
          'watch',
          'app',
          '--instance',
          instance,
          '--session-ttl',
          ttl,
          '--json',
          '--store',
          server.url,
        ],
        {
          stdio: ['ignore', 'pipe', 'inherit'],
        },
      );
      watchers.push(child);
      child.once('exit', (code) => reject(new Error(`watcher ${instance} exited with ${code}`)));
      createInterface({ input: child.stdout }).on('line', (line) => {
        if ((JSON.parse(line) as { event: string }).event === 'ready') resolve(child);
      });
    });
  /** What the lease's expiry does, without waiting 30 s for it. */
  const revokeHolder = async (instance: string): Promise<void> => {
    const store = await openStore(server.url);
    try {
      const kv = await store.get(`/muster/config-holders/app/${instance}`);
      assert.ok(kv !== undefined, `no holder key for ${instance}`);
      await store.revokeLease(kv.lease);
    } finally {
      await store.close();
    }
  };
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'muster-holders-cli-'));
    server = await startServer({ dataDir: join(dir, 'data'), listen: '127.0.0.1:0' });
    writeFileSync(join(dir, 'v.json'), '{"delay": 1}');
  });
  after(async () => {
    for (const w of watchers) w.kill('SIGKILL');
    await server?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test(
    'returns when every live watcher holds the version; names a stopped one; a dead one stops counting',
    { timeout: 60_000 },
    async () => {
      assert.equal((await muster('config', 'init', 'app', '--max-staleness', '1s')).code, 0);
      const [, , w3] = await Promise.all([watcher('w1'), watcher('w2'), watcher('w3', '30s')]);
      const ok = await muster(
        'config',
        'set',
        'app',
        '--file',
        join(dir, 'v.json'),
        '--in',
        '3s',
        '--wait',
        '--json',
      );
      assert.equal(ok.code, 0, ok.stderr);
      assert.deepEqual((JSON.parse(ok.stdout) as { holders: string[] }).holders, ['w1', 'w2', 'w3']);

      w3.kill('SIGSTOP'); // alive for the store until its lease runs out, but receives nothing
      const late = await muster(
        'config',
        'set',
        'app',
        '--file',
        join(dir, 'v.json'),
        '--in',
        '3s',
        '--wait',
        '--timeout',
        '500ms',
      );
      assert.equal(late.code, 1, late.stdout + late.stderr);
      assert.match(late.stderr, /^MUSTER_NOT_PROPAGATED: .*w3 \(has 1\)/);
      const tl = await muster('config', 'timeline', 'app', '--once');
      assert.match(tl.stdout, /HELD +NOT YET/);
      assert.match(tl.stdout, /\n2 .* 2\/3 +w3/);

      w3.kill('SIGKILL'); // its lease (30 s) would expire; revoke it now: no longer a live holder
      const lease = (await muster('config', 'timeline', 'app', '--json')).stdout;
      assert.match(lease, /"w3"/);
      await revokeHolder('w3');
      const done = await muster(
        'config',
        'set',
        'app',
        '--file',
        join(dir, 'v.json'),
        '--in',
        '3s',
        '--wait',
        '--timeout',
        '20s',
        '--json',
      );
      assert.equal(done.code, 0, done.stderr);
      assert.deepEqual((JSON.parse(done.stdout) as { holders: string[] }).holders, ['w1', 'w2']);
    },
  );
});
