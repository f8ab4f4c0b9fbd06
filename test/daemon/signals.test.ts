import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { startChild, within } from './child.js';

const fixture = new URL('./fixtures/daemon-fixture.js', import.meta.url).pathname;

function runFixture(env: Record<string, string>) {
  return startChild(process.execPath, [fixture], { MUSTER_LOG_LEVEL: 'info', ...env });
}

const isEvent =
  (event: string) =>
  (_line: string, json: { event?: string } | undefined): boolean =>
    json?.event === event;

describe('daemon runtime: signals (real processes)', () => {
  test('SIGTERM: graceful stop, exit 0', { timeout: 30_000 }, async () => {
    const run = runFixture({});
    try {
      await run.waitFor(isEvent('running'));
      run.child.kill('SIGTERM');
      const exit = await within(run.exit, 10_000, 'exit after SIGTERM');
      assert.deepEqual(exit, { code: 0, signal: null }, run.stderr());
      assert.ok(run.lines.some((l) => l.includes('"event":"stop"')));
      assert.ok(!run.lines.some((l) => l.includes('"event":"forced"')));
      assert.match(run.stderr(), /stopping gracefully \(SIGTERM\)/);
      assert.match(run.stderr(), /stopped \(exit code 0\)/);
    } finally {
      run.kill();
    }
  });

  test('a body that ignores its stop: the deadline forces it, exit 143', { timeout: 30_000 }, async () => {
    const run = runFixture({ FIXTURE_STOP: 'until-force', FIXTURE_SHUTDOWN_TIMEOUT: '400ms' });
    try {
      await run.waitFor(isEvent('running'));
      const t0 = performance.now();
      run.child.kill('SIGTERM');
      const exit = await within(run.exit, 10_000, 'exit after the deadline');
      const ms = performance.now() - t0;
      assert.deepEqual(exit, { code: 143, signal: null }, run.stderr());
      assert.ok(ms >= 380, `forced after ${ms} ms, before the 400 ms deadline`);
      assert.ok(
        run.lines.some((l) => l.includes('"event":"forced"')),
        'the body saw its force signal',
      );
      assert.match(run.stderr(), /shutdownTimeout of 400ms passed/);
    } finally {
      run.kill();
    }
  });

  test(
    'a body that hangs even when forced: the runtime exits after forceTimeout',
    { timeout: 30_000 },
    async () => {
      const run = runFixture({
        FIXTURE_STOP: 'hang',
        FIXTURE_SHUTDOWN_TIMEOUT: '300ms',
        FIXTURE_FORCE_TIMEOUT: '300ms',
      });
      try {
        await run.waitFor(isEvent('running'));
        run.child.kill('SIGTERM');
        const exit = await within(run.exit, 10_000, 'exit after deadline + forceTimeout');
        assert.deepEqual(exit, { code: 143, signal: null }, run.stderr());
        assert.match(run.stderr(), /did not stop within forceTimeout/);
      } finally {
        run.kill();
      }
    },
  );

  test(
    'a second SIGTERM forces at once (no waiting for the 30 s deadline)',
    { timeout: 30_000 },
    async () => {
      const run = runFixture({ FIXTURE_STOP: 'until-force' });
      try {
        await run.waitFor(isEvent('running'));
        run.child.kill('SIGTERM');
        await run.waitFor(isEvent('stop'));
        const t0 = performance.now();
        run.child.kill('SIGTERM');
        const exit = await within(run.exit, 10_000, 'exit after the second SIGTERM');
        assert.deepEqual(exit, { code: 143, signal: null }, run.stderr());
        assert.ok(performance.now() - t0 < 5_000);
        assert.match(run.stderr(), /second signal \(SIGTERM\)/);
      } finally {
        run.kill();
      }
    },
  );

  test('Ctrl-C twice: forced, exit 130', { timeout: 30_000 }, async () => {
    const run = runFixture({ FIXTURE_STOP: 'until-force' });
    try {
      await run.waitFor(isEvent('running'));
      run.child.kill('SIGINT');
      await run.waitFor(isEvent('stop'));
      run.child.kill('SIGINT');
      const exit = await within(run.exit, 10_000, 'exit after the second SIGINT');
      assert.deepEqual(exit, { code: 130, signal: null }, run.stderr());
    } finally {
      run.kill();
    }
  });

  test('SIGHUP reloads a body that can, and stops one that cannot', { timeout: 30_000 }, async () => {
    const reloading = runFixture({ FIXTURE_RELOAD: '1' });
    const plain = runFixture({});
    try {
      await reloading.waitFor(isEvent('running'));
      reloading.child.kill('SIGHUP');
      await reloading.waitFor(isEvent('reloaded'));
      reloading.child.kill('SIGHUP');
      await reloading.waitFor(
        (l) => l.includes('reloaded') && reloading.lines.filter((x) => x.includes('reloaded')).length >= 2,
      );
      assert.equal(reloading.child.exitCode, null, 'still running after two reloads');
      reloading.child.kill('SIGTERM');
      assert.deepEqual(await within(reloading.exit, 10_000, 'exit'), { code: 0, signal: null });

      await plain.waitFor(isEvent('running'));
      plain.child.kill('SIGHUP');
      assert.deepEqual(await within(plain.exit, 10_000, 'exit after SIGHUP'), { code: 0, signal: null });
    } finally {
      reloading.kill();
      plain.kill();
    }
  });

  test(
    'a start that fails with a coded error: exit 1 and the code on stderr',
    { timeout: 30_000 },
    async () => {
      const run = runFixture({ FIXTURE_START: 'fail' });
      try {
        const exit = await within(run.exit, 10_000, 'exit after a failed start');
        assert.deepEqual(exit, { code: 1, signal: null });
        assert.match(run.stderr(), /MUSTER_INVALID_ARGUMENT: the fixture was told to fail/);
        assert.match(run.stderr(), /start failed/);
      } finally {
        run.kill();
      }
    },
  );
});

describe('daemon runtime: clean-up hooks for processes without a daemon', () => {
  const interrupt = new URL('./fixtures/interrupt-fixture.js', import.meta.url).pathname;

  test(
    'without a daemon: SIGTERM runs the hook, then ends the process by the signal',
    { timeout: 30_000 },
    async () => {
      const run = startChild(process.execPath, [interrupt]);
      try {
        await run.waitForLine((l) => l === 'running');
        run.child.kill('SIGTERM');
        assert.deepEqual(await within(run.exit, 10_000, 'exit'), { code: null, signal: 'SIGTERM' });
        assert.ok(run.lines.includes('hook'), run.lines.join('\n'));
      } finally {
        run.kill();
      }
    },
  );

  test(
    'with a daemon: the daemon owns the signal and the hook stays out of the way',
    { timeout: 30_000 },
    async () => {
      const run = startChild(process.execPath, [interrupt], { FIXTURE_DAEMON: '1' });
      try {
        await run.waitForLine((l) => l === 'running');
        run.child.kill('SIGTERM');
        assert.deepEqual(await within(run.exit, 10_000, 'exit'), { code: 0, signal: null });
        assert.ok(!run.lines.includes('hook'), run.lines.join('\n'));
      } finally {
        run.kill();
      }
    },
  );
});
