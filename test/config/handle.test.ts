import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  cancelConfig,
  type ConfigSwitch,
  type ConfigVersion,
  openConfig,
  publishConfig,
  readConfig,
} from '../../src/config/index.js';
import { checkVersionHistory, type TaskRecord } from '../../src/testing/index.js';
import { isMusterError } from '../../src/errors.js';
import { code, setup } from './setup.js';
import { FaultyStore } from '../../src/testing/index.js';

describe('config handle', () => {
  test('serves the version in force, switches at the instant, and reports upcoming versions', async () => {
    const { clock, store } = await setup();
    const v1 = await publishConfig(store, 'demo', { mood: false }, { in: '5s', clock });
    const h = openConfig<{ mood: boolean }>(store, 'demo', { clock });
    await h.ready();
    assert.throws(() => h.current(), code('MUSTER_MISSING_CONFIG'));
    assert.deepEqual(
      h.upcoming().map((v) => v.version),
      [1],
    );
    const switches: ConfigSwitch<{ mood: boolean }>[] = [];
    h.on('switch', (s) => switches.push(s));
    await clock.tick(5000, 50);
    assert.equal(h.current().version, 1);
    assert.equal(switches.length, 1);
    assert.equal(switches[0]?.latenessMs, 0);
    assert.equal(switches[0]?.version.activateAt, v1.activateAt);

    const v2 = await publishConfig(store, 'demo', { mood: true }, { in: '4s', clock });
    await clock.tick(3999, 50);
    assert.equal(h.current().version, 1);
    assert.equal(h.at(v2.activateAt - 1).version, 1);
    await clock.tick(1, 1);
    assert.equal(h.current().version, 2);
    assert.deepEqual(h.current().value, { mood: true });
    assert.equal(switches.length, 2);
    assert.equal(switches[1]?.previous?.version, 1);
    await h.close();
    await h.close(); // idempotent
    assert.throws(() => h.current(), code('MUSTER_CLOSED'));
  });

  test('a batch snapshot straddling an activation picks the right version per entry', async () => {
    const { clock, store } = await setup();
    await publishConfig(store, 'demo', 'old', { in: '3s', clock });
    const h = openConfig<string>(store, 'demo', { clock });
    await h.ready();
    await clock.tick(3000, 100);
    const v2 = await publishConfig(store, 'demo', 'new', { in: '3s', clock });
    await clock.tick(2900, 100);
    const snap = h.snapshot();
    const entries = [v2.activateAt - 50, v2.activateAt - 1, v2.activateAt, v2.activateAt + 50];
    assert.deepEqual(
      entries.map((t) => snap.at(t).value),
      ['old', 'old', 'new', 'new'],
    );
    // The snapshot vouches only up to its horizon.
    assert.throws(() => snap.at(snap.horizon + 1), code('MUSTER_STALE_CONFIG'));
    await h.close();
  });

  test('fails closed within maxStaleness when the store stops answering, then recovers', async () => {
    const { clock, store } = await setup({ maxStaleness: '2s' });
    await publishConfig(store, 'demo', 1, { in: '3s', clock });
    const faulty = new FaultyStore(store);
    const h = openConfig<number>(faulty, 'demo', { clock });
    await h.ready();
    await clock.tick(3000, 50);
    assert.equal(h.current().value, 1);
    faulty.pause();
    const pausedAt = clock.monotonic();
    let staleAt: number | undefined;
    for (let i = 0; i < 300 && staleAt === undefined; i++) {
      await clock.tick(10, 10);
      try {
        h.current();
      } catch (err) {
        assert.ok(isMusterError(err, 'MUSTER_STALE_CONFIG'), String(err));
        staleAt = clock.monotonic();
      }
    }
    assert.ok(staleAt !== undefined, 'never became stale');
    assert.ok(staleAt - pausedAt <= 2000 + 10, `stale only after ${staleAt - pausedAt} ms`);
    assert.equal(h.state, 'stale');
    await clock.tick(5000, 50);
    assert.throws(() => h.current(), code('MUSTER_STALE_CONFIG'));
    assert.throws(() => h.snapshot(), code('MUSTER_STALE_CONFIG'));
    faulty.resume();
    await clock.tick(1000, 50);
    assert.equal(h.current().value, 1);
    assert.equal(h.state, 'fresh');
    await h.close();
  });

  test('notices a silently dead watch and re-lists', async () => {
    const { clock, store } = await setup();
    await publishConfig(store, 'demo', 'a', { in: '3s', clock });
    const faulty = new FaultyStore(store);
    const h = openConfig<string>(faulty, 'demo', { clock });
    await h.ready();
    await clock.tick(3000, 50);
    faulty.muteWatches();
    const v2 = await publishConfig(store, 'demo', 'b', { in: '5s', clock });
    // Head reads still answer, but the watch never delivers v2: the handle must not vouch past it.
    let refused = 0;
    for (let i = 0; i < 60; i++) {
      await clock.tick(50, 50);
      try {
        assert.equal(h.current().value, 'a');
      } catch (err) {
        assert.ok(isMusterError(err, 'MUSTER_STALE_CONFIG'));
        refused++;
      }
    }
    faulty.resume(); // the next watch (after the re-list) works again
    await clock.tick(v2.activateAt - clock.now(), 50);
    assert.equal(h.current().value, 'b');
    assert.ok(refused >= 0);
    await h.close();
  });

  test('an invalid value in the store is reported and ignored', async () => {
    const { clock, store } = await setup({ schema: { type: 'object', required: ['n'] } });
    await publishConfig(store, 'demo', { n: 1 }, { in: '3s', clock });
    const h = openConfig<{ n: number }>(store, 'demo', { clock });
    const invalid: string[] = [];
    h.on('invalid', (e) => invalid.push(`${e.error.code} ${e.key}`));
    await h.ready();
    await clock.tick(3000, 100);
    const at = clock.now() + 3000;
    await store.put(
      '/muster/config/demo/versions/0000000002',
      JSON.stringify({ version: 2, activateAt: at, value: { wrong: true }, createdAt: 0 }),
    );
    await store.put('/muster/config/demo/versions/0000000003', 'not json');
    await clock.tick(4000, 100);
    assert.equal(h.current().version, 1);
    assert.ok(
      invalid.some((s) => s.startsWith('MUSTER_SCHEMA_VIOLATION')),
      invalid.join(),
    );
    assert.ok(
      invalid.some((s) => s.startsWith('MUSTER_CORRUPT_DATA')),
      invalid.join(),
    );
    await h.close();
  });

  test('a cancelled version never comes into force', async () => {
    const { clock, store } = await setup();
    await publishConfig(store, 'demo', 'a', { in: '3s', clock });
    const h = openConfig<string>(store, 'demo', { clock });
    await h.ready();
    await clock.tick(3000, 100);
    const v2 = await publishConfig(store, 'demo', 'b', { in: '10s', clock });
    await clock.tick(1000, 100);
    await cancelConfig(store, 'demo', v2.version, { clock });
    await clock.tick(10_000, 100);
    assert.equal(h.current().value, 'a');
    const v3 = await publishConfig(store, 'demo', 'c', { in: '3s', clock });
    assert.equal(v3.version, 3, 'numbers are never reused');
    await h.close();
  });

  test('switch timers survive wall-clock jumps', async () => {
    const { clock, store } = await setup();
    await publishConfig(store, 'demo', 'a', { in: '3s', clock });
    const h = openConfig<string>(store, 'demo', { clock });
    await h.ready();
    const seen: { version: number; at: number }[] = [];
    h.on('switch', (s) => seen.push({ version: s.version.version, at: clock.now() }));
    clock.jumpWall(-1000); // the timer, armed on monotonic time, fires early: it must re-arm
    await clock.tick(3000, 100);
    assert.equal(seen.length, 0);
    await clock.tick(1000, 10);
    assert.equal(seen.length, 1);
    assert.ok((seen[0]?.at ?? 0) >= (h.current().activateAt ?? 0));
    const v2 = await publishConfig(store, 'demo', 'b', { in: '5s', clock });
    clock.jumpWall(6000); // past v2's instant: noticed by the next verification round
    await clock.tick(600, 10);
    assert.equal(seen[1]?.version, v2.version);
    await h.close();
  });

  test('invariant 1 over many switches, several handles and random task times (recorded and checked)', async () => {
    const { clock, store } = await setup({ maxStaleness: '1s', maxClockSkew: '10ms', minLeadTime: '1100ms' });
    const handles = Array.from({ length: 5 }, () => openConfig<number>(store, 'demo', { clock }));
    await Promise.all(handles.map((h) => h.ready()));
    const tasks: TaskRecord[] = [];
    let seed = 42;
    const rand = (): number => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    let nextPublish = clock.now();
    for (let step = 0; step < 3000; step++) {
      if (clock.now() >= nextPublish) {
        const lead = 1100 + Math.floor(rand() * 400); // close to minLeadTime
        await publishConfig(store, 'demo', step, { in: lead, clock });
        nextPublish = clock.now() + 200 + rand() * 800;
      }
      await clock.tick(5 + Math.floor(rand() * 10), 5);
      for (const [i, h] of handles.entries()) {
        const startedAt = clock.now() - Math.floor(rand() * 5);
        let version: number | null = null;
        try {
          version = h.at(startedAt).version;
        } catch {
          version = null;
        }
        tasks.push({ worker: `w${i}`, startedAt, version });
      }
    }
    const state = await readConfig(store, 'demo');
    const report = checkVersionHistory(tasks, state.versions);
    assert.deepEqual(report.violations, []);
    assert.ok(state.versions.length > 20, `only ${state.versions.length} switches`);
    assert.ok(report.ran > report.tasks * 0.9, `${report.refused} refused of ${report.tasks}`);
    await Promise.all(handles.map((h) => h.close()));
  });

  test('the checker fails on a history with a wrong version', () => {
    const versions: ConfigVersion[] = [
      { version: 1, activateAt: 1000, value: 'a', createdAt: 0 },
      { version: 2, activateAt: 2000, value: 'b', createdAt: 0 },
    ];
    const report = checkVersionHistory(
      [
        { worker: 'w', startedAt: 1999, version: 1 },
        { worker: 'w', startedAt: 2000, version: 1 },
        { worker: 'w', startedAt: 2500, version: null },
      ],
      versions,
    );
    assert.equal(report.violations.length, 1);
    assert.equal(report.violations[0]?.expected, 2);
    assert.equal(report.refused, 1);
  });
});
