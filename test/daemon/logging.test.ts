import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { describe, test } from 'node:test';
import { pino } from 'pino';
import { logFor, runDaemon } from '../../src/daemon/index.js';
import { startChild, within } from './child.js';

const fixture = new URL('./fixtures/daemon-fixture.js', import.meta.url).pathname;

/** A pino logger whose lines land in `lines`. */
function capture(level = 'info'): { logger: pino.Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString().split('\n'))
        if (l !== '') lines.push(JSON.parse(l) as Record<string, unknown>);
      cb();
    },
  });
  return { logger: pino({ level }, stream), lines };
}

describe('daemon runtime: logging', () => {
  test(
    'every line carries the daemon; children carry service, instance and partition',
    { timeout: 20_000 },
    async () => {
      const { logger, lines } = capture();
      const d = await runDaemon(
        { name: 'agent', logger, handleSignals: false, admin: false },
        async (ctx) => {
          logFor(ctx.log, { service: 'orders', instance: 'host-a', partition: 7 }).info('acquired');
          return { stop: async () => undefined };
        },
      );
      await d.stop();
      assert.ok(lines.length >= 3);
      for (const l of lines) assert.equal(l.daemon, 'agent', JSON.stringify(l));
      const acquired = lines.find((l) => l.msg === 'acquired');
      assert.deepEqual([acquired?.service, acquired?.instance, acquired?.partition], ['orders', 'host-a', 7]);
      assert.deepEqual(
        lines
          .map((l) => l.msg)
          .filter((m) => m === 'starting' || m === 'running' || m === 'stopped (exit code 0)'),
        ['starting', 'running', 'stopped (exit code 0)'],
      );
    },
  );

  test(
    'logLevel overrides the given logger; a coded failure is logged with its code, not its stack',
    { timeout: 20_000 },
    async () => {
      const { logger, lines } = capture('info');
      await assert.rejects(
        runDaemon(
          { name: 'relay', logger, logLevel: 'error', handleSignals: false, admin: false },
          async (ctx) => {
            ctx.log.info('not shown');
            const { MusterError } = await import('../../src/errors.js');
            throw new MusterError('MUSTER_ADDRESS_IN_USE', 'taken');
          },
        ),
        /taken/,
      );
      assert.equal(
        lines.some((l) => l.msg === 'not shown' || l.msg === 'starting'),
        false,
      );
      const failed = lines.find((l) => l.msg === 'start failed');
      assert.deepEqual((failed?.error as { code: string }).code, 'MUSTER_ADDRESS_IN_USE');
      assert.equal(failed?.err, undefined);
    },
  );

  test('MUSTER_LOG_LEVEL sets the level of a daemon process', { timeout: 30_000 }, async () => {
    const run = startChild(process.execPath, [fixture], { MUSTER_LOG_LEVEL: 'warn' });
    try {
      await run.waitFor((_l, j: { event?: string } | undefined) => j?.event === 'running');
      run.child.kill('SIGTERM');
      assert.deepEqual(await within(run.exit, 10_000, 'exit'), { code: 0, signal: null });
      assert.equal(run.stderr(), '', 'no info lines at warn');
    } finally {
      run.kill();
    }
    const bad = startChild(process.execPath, [fixture], { MUSTER_LOG_LEVEL: 'loud' });
    try {
      assert.deepEqual(await within(bad.exit, 10_000, 'exit'), { code: 1, signal: null });
      assert.match(bad.stderr(), /MUSTER_INVALID_ARGUMENT: log level must be one of/);
    } finally {
      bad.kill();
    }
  });
});
