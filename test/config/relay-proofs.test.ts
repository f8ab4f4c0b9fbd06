import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ManualClock } from '../../src/clock.js';
import {
  MIN_PROOF_PERIOD_MS,
  PROOF_DRIP_TICK_MS,
  ProofDrip,
  type ProofTarget,
} from '../../src/config/relay-proofs.js';

function targets(
  n: number,
  every: number,
  log: { wid: number; at: number; proof: number }[],
  clock: ManualClock,
) {
  return Array.from({ length: n }, (_, wid): ProofTarget => ({
    wid,
    every,
    lastProof: -Infinity,
    writeRaw: (line) => {
      const m = JSON.parse(line) as { wid: number; proof: number };
      log.push({ wid: m.wid, at: clock.monotonic(), proof: m.proof });
    },
  }));
}

describe('pushed proofs drip', () => {
  test('each proof reaches every watch once, within half the period, a few watches per tick', () => {
    const clock = new ManualClock();
    let verified = clock.monotonic();
    let applied = 7;
    const drip = new ProofDrip(clock, { verifiedMono: () => verified, applied: () => applied });
    const log: { wid: number; at: number; proof: number }[] = [];
    for (const t of targets(150, 500, log, clock)) drip.add(t);
    for (let round = 0; round < 3; round++) {
      const start = clock.monotonic();
      log.length = 0;
      clock.advance(260);
      assert.equal(log.length, 150, `round ${round}: ${log.length} pushes`);
      assert.equal(new Set(log.map((l) => l.wid)).size, 150, 'a watch got the same proof twice');
      assert.ok(log.every((l) => l.at - start <= 250 + PROOF_DRIP_TICK_MS && l.proof === applied));
      const perTick = new Map<number, number>();
      for (const l of log) perTick.set(l.at, (perTick.get(l.at) ?? 0) + 1);
      assert.ok(Math.max(...perTick.values()) <= 6, `a burst of ${Math.max(...perTick.values())}`);
      // Nothing new: nothing sent, and the drip sleeps.
      log.length = 0;
      clock.advance(240);
      assert.equal(log.length, 0);
      verified = clock.monotonic();
      applied++;
      drip.notify();
    }
    drip.close();
  });

  test('watches leaving mid-drip neither break it nor get pushes', () => {
    const clock = new ManualClock();
    const drip = new ProofDrip(clock, { verifiedMono: () => 1, applied: () => 1 });
    const log: { wid: number; at: number; proof: number }[] = [];
    const ts = targets(20, 100, log, clock);
    for (const t of ts) drip.add(t);
    clock.advance(PROOF_DRIP_TICK_MS);
    for (const t of ts.slice(5)) drip.delete(t);
    clock.advance(200);
    assert.deepEqual(
      [...new Set(log.map((l) => l.wid))].sort((a, b) => a - b),
      [0, 1, 2, 3, 4],
    );
    drip.close();
  });

  test('a watch asking for absurdly frequent proofs cannot make the relay burst', () => {
    const clock = new ManualClock();
    const drip = new ProofDrip(clock, { verifiedMono: () => 1, applied: () => 1 });
    const log: { wid: number; at: number; proof: number }[] = [];
    for (const t of targets(100, 1, log, clock)) drip.add(t);
    clock.advance(PROOF_DRIP_TICK_MS);
    // Spread over half of MIN_PROOF_PERIOD_MS, not sent all at once.
    const perTick = Math.ceil((100 * PROOF_DRIP_TICK_MS) / (MIN_PROOF_PERIOD_MS / 2));
    assert.equal(log.length, perTick);
    clock.advance(MIN_PROOF_PERIOD_MS);
    assert.equal(log.length, 100);
    drip.close();
  });
});
