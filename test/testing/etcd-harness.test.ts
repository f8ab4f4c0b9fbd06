/** The etcd harness cleans up after a test process that died without cleaning up itself. */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { describe, test } from 'node:test';
import { ETCD_INSTALL_HINT, needBinary, sweepOrphans, waitFor } from '../../src/testing/index.js';

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

describe('etcd harness', { skip: needBinary('etcd', ETCD_INSTALL_HINT) }, () => {
  test('an etcd left behind by a SIGKILLed test process is swept by the next start', async () => {
    const harness = new URL('../../src/testing/etcd-harness.js', import.meta.url).href;
    const script = `import { startEtcd } from '${harness}';
      const c = await startEtcd();
      process.stdout.write(JSON.stringify({ pid: c.members[0].pid }) + '\\n');
      setInterval(() => {}, 1000);`;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => (out += chunk));
    await waitFor(() => out.includes('\n'), { timeoutMs: 30_000, what: 'the child starting etcd' });
    const { pid } = JSON.parse(out) as { pid: number };
    assert.ok(alive(pid));
    child.kill('SIGKILL'); // no exit hook runs: the etcd is orphaned
    await once(child, 'exit');
    assert.ok(alive(pid), 'etcd outlived its SIGKILLed parent');
    sweepOrphans();
    await waitFor(() => !alive(pid), { timeoutMs: 5000, what: 'the orphaned etcd to die' });
  });
});
