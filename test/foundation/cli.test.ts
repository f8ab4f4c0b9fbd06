import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { test } from 'node:test';

const bin = new URL('../../../bin/muster.js', import.meta.url).pathname;

test('muster --help and --version work from the bin', () => {
  const help = execFileSync(process.execPath, [bin, '--help'], { encoding: 'utf8' });
  assert.match(help, /Usage: muster/);
  assert.match(help, /control plane/);
  const version = execFileSync(process.execPath, [bin, '--version'], { encoding: 'utf8' }).trim();
  assert.match(version, /^\d+\.\d+\.\d+/);
});

test('a coded error prints its code and exits 1; bad usage exits 2', () => {
  const coded = spawnSync(process.execPath, [bin, 'store', 'get', '/x', '--store', 'nosuch:'], {
    encoding: 'utf8',
  });
  assert.equal(coded.status, 1);
  assert.match(coded.stderr, /^MUSTER_UNSUPPORTED_URL: /);
  const usage = spawnSync(process.execPath, [bin, 'no-such-command'], { encoding: 'utf8' });
  assert.equal(usage.status, 2);
  assert.match(usage.stderr, /unknown command/);
});

test('a reader that goes away (muster --help | head) ends the output quietly, exit 0', async () => {
  const child = spawn(process.execPath, [bin, '--help'], { stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout.destroy(); // closed before the first write: the write fails with EPIPE
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const code = await new Promise<number | null>((resolve) => child.once('close', resolve));
  assert.equal(stderr, '');
  assert.equal(code, 0);
});
