/**
 * Crash points of `muster serve`'s durable path at start-up (issue 13 §1): the harness
 * (crash-harness.ts) kills the server with SIGKILL at one exact step (`MUSTER_CRASH_AT`), restarts it
 * three times with a kill after each, and checks every acknowledged write and the member id after
 * every start. The points a snapshot passes while serving are in crash-points-snapshot.test.ts.
 * docs/serve.md ("Crash points") maps each point to its test.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  blankNewest,
  crashAndRecover,
  History,
  kill,
  mustStart,
  olderVersionsLeftovers,
  startServe,
  tempDir,
  tornTail,
} from './crash-harness.js';

const T = { timeout: 90_000 };

describe('crash points of the durable path at start-up (MUSTER_CRASH_AT)', { timeout: 20 * 90_000 }, () => {
  test(
    'issue 13: a kill between creating a segment and writing its header (at start-up) loses nothing',
    T,
    async () => {
      await crashAndRecover({ crashAt: 'wal.segment.created', phase: 'start' });
    },
  );

  for (const point of ['wal.segment.header-written', 'wal.segment.synced', 'wal.segment.renamed']) {
    test(`a kill at ${point} (the segment a start creates) loses nothing`, T, async () => {
      await crashAndRecover({ crashAt: point, phase: 'start' });
    });
  }

  test('a kill at wal.truncated (cutting a torn tail at start-up) loses nothing', T, async () => {
    await crashAndRecover({ crashAt: 'wal.truncated', phase: 'start', damage: tornTail });
  });

  test(
    'a blank newest segment left by an older version is replaced, even after a kill at wal.blank-removed',
    T,
    async () => {
      await crashAndRecover({ crashAt: 'wal.blank-removed', phase: 'start', damage: blankNewest });
    },
  );

  test(
    'issue 13: a data directory an older version left unstartable (a 0-byte segment before the newest) starts with every write',
    T,
    async () => {
      await crashAndRecover({ phase: 'start', damage: olderVersionsLeftovers });
    },
  );

  for (const point of ['member-id.tmp-written', 'member-id.renamed', 'lock.written']) {
    test(
      `a kill at ${point} on the first start: the server starts and its member id never changes`,
      T,
      async () => {
        const h = await crashAndRecover({ crashAt: point, phase: 'first-start' });
        assert.match(h.memberId ?? '', /^\d+$/);
      },
    );
  }

  test('a kill at lock.written on a later start: the stale LOCK is taken over', T, async () => {
    await crashAndRecover({ crashAt: 'lock.written', phase: 'start' });
  });

  test('the checker fails when an acknowledged write is missing', T, async () => {
    const dir = tempDir();
    const h = new History();
    const s = await mustStart(dir);
    try {
      await h.write(s.address, 3);
      h.acked.set('/crash/never-written', { value: 'x', revision: 2 });
      await assert.rejects(h.check(s.address), /never-written.* is missing/);
    } finally {
      await kill(s);
    }
  });

  test('MUSTER_CRASH_AT naming no crash point is refused (a typo never passes for a crash)', T, async () => {
    const r = await startServe(tempDir(), { crashAt: 'wal.segment.craeted' });
    assert.ok('down' in r, 'the server started');
    assert.notEqual(r.down.code, 0);
    assert.match(r.output, /MUSTER_INVALID_ARGUMENT.*MUSTER_CRASH_AT/);
  });
});
