/** The etcd harness cleans up after a test process that died without cleaning up itself. */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { describe, test } from 'node:test';
import { isAlive, spawnProcess } from '../../src/process/index.js';
import { ETCD_INSTALL_HINT, needBinary, sweepOrphans, waitFor } from '../../src/testing/index.js';

describe('etcd harness', { skip: needBinary('etcd', ETCD_INSTALL_HINT) }, () => {
  test(
    'an etcd started by a SIGKILLed test process dies with it; the next start removes its directory',
    { timeout: 60_000 },
    async () => {
      const harness = new URL('../../src/testing/etcd-harness.js', import.meta.url).href;
      const script = `import { startEtcd } from '${harness}';
      const c = await startEtcd();
      process.stdout.write(JSON.stringify({ pid: c.members[0].pid, dataDir: c.members[0].dataDir }) + '\\n');
      setInterval(() => {}, 1000);`;
      let out: string | undefined;
      const child = await spawnProcess({
        command: [process.execPath, '--input-type=module', '-e', script],
        onLine: (stream, line) => {
          if (stream === 'stdout') out = line;
        },
        stderr: 'inherit',
      });
      try {
        await waitFor(() => out !== undefined, { timeoutMs: 30_000, what: 'the child starting etcd' });
        const { pid, dataDir } = JSON.parse(out!) as { pid: number; dataDir: string };
        assert.ok(isAlive(pid));
        process.kill(child.pid, 'SIGKILL'); // no exit hook runs; the process kernel's guard does
        await child.gone;
        await waitFor(() => !isAlive(pid), { timeoutMs: 5000, what: 'the orphaned etcd to die' });
        assert.ok(existsSync(dataDir), 'the data directory is left behind');
        sweepOrphans();
        assert.ok(!existsSync(dataDir), 'the next start removed it');
      } finally {
        await child.kill();
      }
    },
  );
});
