/**
 * Death of the parent: a parent with 20 children (some fork grandchildren, some ignore SIGTERM) is
 * SIGKILLed; every descendant must be dead soon after, every time. And the checker is shown to catch
 * a survivor (a process started outside the kernel).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { SPARES } from '../../src/process/spare.js';
import { parentKill, percentile } from './parent-kill.js';

const ROUNDS = Number(process.env.MUSTER_PARENT_KILL_ROUNDS ?? 20);

describe('death of the parent', () => {
  test(
    `SIGKILL of a parent with 20 children: every descendant dies (${ROUNDS} rounds)`,
    { timeout: 120_000 },
    async () => {
      const ms: number[] = [];
      for (let i = 0; i < ROUNDS; i++) {
        const r = await parentKill();
        assert.equal(r.pids.length, 45, `the fixture reported ${r.pids.length} pids`);
        assert.deepEqual(r.survivors, [], `round ${i}: survivors ${r.survivors.join(' ')}`);
        ms.push(r.ms);
      }
      process.stdout.write(
        `# parent SIGKILL → all gone: p50 ${percentile(ms, 50).toFixed(1)} ms, max ${Math.max(...ms).toFixed(1)} ms\n`,
      );
    },
  );

  test('the guard alone (no setpriv) also kills every descendant', { timeout: 60_000 }, async () => {
    for (let i = 0; i < 5; i++) {
      const r = await parentKill({ noSetpriv: true, unmarked: i % 2 === 0 });
      assert.deepEqual(r.survivors, [], `round ${i}: survivors ${r.survivors.join(' ')}`);
    }
  });

  test('a killed guard is replaced, and the new one knows every group', { timeout: 60_000 }, async () => {
    for (let i = 0; i < 3; i++) {
      // no death signal, no marker: only the new guard's list of groups can kill them
      const r = await parentKill({ killGuard: true, noSetpriv: true, unmarked: true });
      assert.deepEqual(r.survivors, [], `round ${i}: survivors ${r.survivors.join(' ')}`);
    }
  });

  test(
    'children started by spares forked ahead (prewarm), and waiting spares, die too',
    { timeout: 60_000 },
    async () => {
      for (let i = 0; i < 5; i++) {
        const r = await parentKill({ prewarm: true, noSetpriv: i % 2 === 1 });
        assert.equal(r.pids.length, 45 + SPARES, `the fixture reported ${r.pids.length} pids`);
        assert.deepEqual(r.survivors, [], `round ${i}: survivors ${r.survivors.join(' ')}`);
      }
    },
  );

  test(
    'descendants that left their group (setsid) are found by their marker',
    { timeout: 60_000 },
    async () => {
      for (let i = 0; i < 5; i++) {
        const r = await parentKill({ escapees: true });
        assert.deepEqual(r.survivors, [], `round ${i}: survivors ${r.survivors.join(' ')}`);
      }
    },
  );

  test(
    'negative control: the checker catches a process started outside the kernel',
    { timeout: 30_000 },
    async () => {
      const r = await parentKill({ outside: true, timeoutMs: 500 });
      try {
        assert.equal(r.survivors.length, 1, `survivors: ${r.survivors.join(' ')}`);
        assert.equal(r.survivors[0], r.outside);
        assert.equal(r.ms, Infinity);
      } finally {
        for (const pid of r.survivors) process.kill(pid, 'SIGKILL');
      }
    },
  );
});
