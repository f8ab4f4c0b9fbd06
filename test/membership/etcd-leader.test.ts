/**
 * Sessions across a restart of the etcd leader (three members): keep-alives fail over to the
 * surviving members and etcd extends leases on election, so every session whose deadline falls
 * after the election survives. A session whose deadline passes while there is no leader is lost —
 * nobody can renew it — so the test holds each session to what the election it saw allowed.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { openSession, type Session } from '../../src/membership/index.js';
import { openStore } from '../../src/store/index.js';
import { onAbort } from '../../src/util/abort.js';
import { ETCD_INSTALL_HINT, type EtcdCluster, needBinary, startEtcd } from '../../src/testing/index.js';

const skip = needBinary('etcd', ETCD_INSTALL_HINT);

describe('sessions across an etcd leader restart (three members)', { skip }, () => {
  let etcd: EtcdCluster;
  before(async () => {
    etcd = await startEtcd({ members: 3 });
  });
  after(async () => {
    await etcd?.close();
  });

  test(
    'sessions whose deadline falls after the election survive a restart of the leader',
    { timeout: 90_000 },
    async () => {
      const store = await openStore(etcd.url);
      const sessions: Session[] = [];
      for (const ttl of ['3s', '5s', '10s']) sessions.push(await openSession(store, { ttl }));
      // The timeline, for the failure message: what happened when, in ms after the leader's kill.
      const timeline: string[] = [];
      let killedAt = 0;
      const note = (what: string): void => {
        timeline.push(`${(performance.now() - killedAt).toFixed(0)} ms: ${what}`);
      };
      for (const s of sessions) {
        const name = `session ${s.ttlMs} ms`;
        s.on('renewed', () => note(`${name} renewed, ${s.remaining().toFixed(0)} ms left`));
        s.on('keepAliveFailed', (e) => note(`${name} keep-alive failed: ${String(e)}`));
        s.on('lost', (e) => note(`${name} lost: ${e.message}`));
      }
      const leader = await etcd.leader();
      killedAt = performance.now();
      const deadlineAtKill = sessions.map((s) => s.remaining());
      note(`killing the leader; deadlines ${deadlineAtKill.map((d) => d.toFixed(0)).join(', ')} ms ahead`);
      await leader.kill();
      await etcd.waitReady(15_000);
      // Late by up to waitReady's poll, which only excuses a loss a little more than it should.
      const electedAfter = performance.now() - killedAt;
      note('a new leader answers');
      await leader.restart();
      await etcd.waitReady(15_000);
      note('the old leader is back');
      // Keep going until each session has renewed for more than its TTL after the restart (three
      // renewals at TTL/3 apart), or is lost — whichever event comes first.
      let timer: NodeJS.Timeout | undefined;
      const stuck = new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          const seen = sessions.map((s) => `${s.ttlMs} ms: ${s.state}, ${s.renewals} renewals`).join('; ');
          reject(new Error(`sessions neither renewed four times nor were lost within 40 s (${seen})`));
        }, 40_000);
      });
      const renewedOrLost = Promise.all(
        sessions.map(
          (s) =>
            new Promise<void>((resolve) => {
              let left = 4;
              const off = s.on('renewed', () => {
                if (--left === 0) done();
              });
              const done = (): void => {
                off();
                resolve();
              };
              onAbort(s.lost, done); // also when it was lost before we got here
            }),
        ),
      );
      await Promise.race([renewedOrLost, stuck]).finally(() => clearTimeout(timer));
      // A renewal reaches the new leader within one hedge period (250 ms) of the election; allow as
      // much again for a loaded machine. A session with more time than that left must have survived.
      const survivable = sessions.filter((_, i) => (deadlineAtKill[i] as number) > electedAfter + 500);
      assert.ok(
        survivable.length > 0,
        `the election took ${electedAfter.toFixed(0)} ms, past every session's deadline — nothing was tested\n${timeline.join('\n')}`,
      );
      for (const s of survivable) {
        assert.equal(
          s.state,
          'active',
          `session ${s.ttlMs} ms (deadline after the election) lost: ${String(s.lost.reason)}\n${timeline.join('\n')}`,
        );
        assert.ok(await store.leaseTimeToLive(s.leaseId), 'etcd still has the lease');
      }
      await Promise.all(sessions.map((s) => s.close()));
      await store.close();
    },
  );
});
