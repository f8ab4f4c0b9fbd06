import assert from 'node:assert/strict';
import { fork } from 'node:child_process';
import { test } from 'node:test';

test('hostWallMs: every process of the host agrees with Date.now() and with each other, even when started together', async () => {
  // 30 processes started at once load the machine the way a fleet's start-up does; that is when
  // performance.timeOrigin was seen 141 ms off in one of them.
  const reports = await Promise.all(
    Array.from(
      { length: 30 },
      () =>
        new Promise<{ offset: number; worst: number }>((resolve, reject) => {
          const child = fork(new URL('./fixtures/wall-probe.js', import.meta.url), [], { stdio: 'ignore' });
          child.once('message', (m) => resolve(m as { offset: number; worst: number }));
          child.once('exit', (code) => code !== 0 && reject(new Error(`probe exited with ${code}`)));
        }),
    ),
  );
  const worst = Math.max(...reports.map((r) => r.worst));
  assert.ok(worst <= 0.05, `a reading fell ${worst.toFixed(3)} ms outside Date.now()'s millisecond`);
  const offsets = reports.map((r) => r.offset);
  const spread = Math.max(...offsets) - Math.min(...offsets);
  assert.ok(spread <= 1.05, `processes disagree by ${spread.toFixed(3)} ms`);
});
