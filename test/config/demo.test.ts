import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { runConfigDemo } from '../../src/demo/index.js';
import { startEtcd, startFaultProxy, startTempServe } from '../../src/testing/index.js';

const launchers = { startEtcd: () => startEtcd(), startFaultProxy, startTempServe: () => startTempServe() };

describe('muster demo (on muster serve)', () => {
  test('switches every worker at the instant, refuses while paused, recovers, and sees no wrong version', async () => {
    const lines: string[] = [];
    const r = await runConfigDemo({ launchers, workers: 3, leadMs: 3500, write: (l) => lines.push(l) });
    assert.equal(r.wrongVersion, 0, lines.join('\n'));
    assert.equal(r.ranWhileUnverifiable, 0, lines.join('\n'));
    assert.equal(r.workersRefusing, 3, lines.join('\n'));
    assert.equal(r.workersRecovered, 3, lines.join('\n'));
    // Recovery is one verification read away: no client-side back-off may hold a worker for seconds
    // (etcd3's default circuit breaker once kept them refusing 3.5 s after the store came back).
    assert.ok(r.slowestRecoveryMs < 1000, lines.join('\n'));
    assert.ok(lines.some((l) => l.includes('config scheduled to take effect at')));
  });
});
