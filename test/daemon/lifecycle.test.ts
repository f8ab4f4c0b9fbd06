import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { pino } from 'pino';
import { runDaemon } from '../../src/daemon/index.js';
import { MusterError } from '../../src/errors.js';

const quiet = pino({ level: 'silent' });

describe('daemon runtime: lifecycle (in-process)', () => {
  test(
    'a stop requested while starting stops the body as soon as start returns',
    { timeout: 20_000 },
    async () => {
      let stopped = false;
      const d = await runDaemon(
        { name: 'early', logger: quiet, handleSignals: false, admin: false },
        async (ctx) => {
          ctx.fail(new MusterError('MUSTER_SESSION_LOST', 'gone while starting'));
          assert.equal(ctx.stopping.aborted, true);
          return {
            stop: async () => {
              stopped = true;
            },
          };
        },
      );
      assert.equal(await d.done, 1, 'fail() ends with 1');
      assert.equal(stopped, true);
      assert.equal(d.state, 'stopped');
    },
  );

  test(
    'a start that never returns is given up after shutdownTimeout + forceTimeout; a late body is stopped',
    { timeout: 20_000 },
    async () => {
      let finishStart: () => void = () => undefined;
      let lateStop: AbortSignal | undefined;
      const t0 = performance.now();
      await assert.rejects(
        runDaemon(
          {
            name: 'stuck',
            logger: quiet,
            handleSignals: false,
            admin: false,
            shutdownTimeout: 100,
            forceTimeout: 100,
          },
          async (ctx) => {
            ctx.fail(new Error('cannot go on'));
            await new Promise<void>((resolve) => (finishStart = resolve));
            return {
              stop: async (force) => {
                lateStop = force;
              },
            };
          },
        ),
        (err: unknown) => err instanceof MusterError && err.code === 'MUSTER_ABORTED',
      );
      assert.ok(performance.now() - t0 >= 190);
      finishStart();
      await new Promise((r) => setTimeout(r, 20));
      assert.equal(lateStop?.aborted, true, 'the late body was stopped, forced');
    },
  );

  test('stop() is idempotent and reload() runs the body one at a time', { timeout: 20_000 }, async () => {
    const order: string[] = [];
    const d = await runDaemon(
      { name: 'reloader', logger: quiet, handleSignals: false, admin: false },
      async () => ({
        reload: async () => {
          order.push('begin');
          await new Promise((r) => setTimeout(r, 20));
          order.push('end');
        },
        stop: async () => undefined,
      }),
    );
    await Promise.all([d.reload(), d.reload()]);
    assert.deepEqual(order, ['begin', 'end', 'begin', 'end']);
    assert.equal(d.ctx.admin.url, '', 'no admin server: no POST /v1/reload');
    const [a, b] = await Promise.all([d.stop(), d.stop()]);
    assert.deepEqual([a, b], [0, 0]);
    assert.equal(await d.stop({ force: true }), 0, 'stopping a stopped daemon changes nothing');
  });

  test('await using stops the daemon', { timeout: 20_000 }, async () => {
    let stopped = false;
    {
      const d = await runDaemon(
        { name: 'scoped', logger: quiet, handleSignals: false, admin: false },
        async () => ({
          stop: async () => {
            stopped = true;
          },
        }),
      );
      await d[Symbol.asyncDispose]();
    }
    assert.equal(stopped, true);
  });
});
