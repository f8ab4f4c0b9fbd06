/**
 * Crash points a snapshot passes while `muster serve` is serving (issue 13 §1): the rotation to a new
 * log segment, the snapshot file's temporary write, sync and rename, and the removal of what the
 * snapshot made obsolete. The harness (crash-harness.ts) kills the server at the point, restarts it
 * three times with a kill after each, and checks every acknowledged write after every start.
 */
import { describe, test } from 'node:test';
import { crashAndRecover } from './crash-harness.js';

const T = { timeout: 90_000 };
/** Snapshot every this many records while serving, so snapshots (and rotations) happen in the crash run. */
const SNAP = 50;

describe('crash points of a snapshot while serving (MUSTER_CRASH_AT)', { timeout: 10 * 90_000 }, () => {
  for (const point of [
    'wal.segment.created:2',
    'wal.segment.header-written:2',
    'wal.segment.renamed:2',
    'snapshot.tmp-written',
    'snapshot.tmp-synced',
    'snapshot.renamed',
    'snapshot.old-removed',
    'wal.segment.removed',
  ]) {
    test(`a kill at ${point} (a snapshot while serving) loses nothing`, T, async () => {
      await crashAndRecover({ crashAt: point, phase: 'running', setupStop: 'term', snapshotRecords: SNAP });
    });
  }
});
