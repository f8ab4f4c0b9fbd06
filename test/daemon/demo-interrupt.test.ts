import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { startChild, within } from './child.js';

const bin = new URL('../../../bin/muster.js', import.meta.url).pathname;

describe('muster demo on the daemon runtime', () => {
  test('Ctrl-C mid-demo stops the workers and the store, then exits 130', { timeout: 90_000 }, async () => {
    const run = startChild(
      process.execPath,
      [bin, 'demo', '--only', 'config', '--workers', '2', '--lead', '20s'],
      {
        MUSTER_LOG_LEVEL: 'info',
      },
    );
    try {
      await run.waitForLine((l) => l.includes('config scheduled to take effect at'), 60_000);
      run.child.kill('SIGINT');
      const exit = await within(run.exit, 30_000, 'exit after Ctrl-C').catch((err: Error) => {
        throw new Error(`${err.message}\nstdout:\n${run.lines.join('\n')}\nstderr:\n${run.stderr()}`);
      });
      assert.deepEqual(exit, { code: 130, signal: null }, `${run.lines.join('\n')}\n${run.stderr()}`);
      assert.ok(run.lines.includes('muster demo: interrupted; workers stopped, store closed'));
    } finally {
      run.kill();
    }
  });
});
