import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  cancelConfig,
  diffValues,
  initConfig,
  publishConfig,
  readConfig,
  resolvePolicy,
  timelineOf,
} from '../../src/config/index.js';
import type { MusterError } from '../../src/errors.js';
import { code, setup } from './setup.js';

describe('config publisher', () => {
  test('policy bounds: minLeadTime must exceed maxStaleness + 2·maxClockSkew', () => {
    const p = resolvePolicy({}, 0);
    assert.equal(p.maxStalenessMs, 2000);
    assert.equal(p.maxClockSkewMs, 250);
    assert.ok(p.minLeadTimeMs > 2500);
    assert.throws(() => resolvePolicy({ minLeadTime: '2500ms' }, 0), code('MUSTER_INVALID_ARGUMENT'));
    assert.throws(() => resolvePolicy({ schema: { type: 'nonsense' } }, 0), code('MUSTER_SCHEMA_VIOLATION'));
  });

  test('init twice is refused; unknown names are refused', async () => {
    const { clock, store } = await setup();
    await assert.rejects(initConfig(store, 'demo', {}, { clock }), code('MUSTER_ALREADY_EXISTS'));
    await assert.rejects(publishConfig(store, 'nope', 1, { in: '1m', clock }), code('MUSTER_NOT_FOUND'));
    await assert.rejects(readConfig(store, 'nope'), code('MUSTER_NOT_FOUND'));
    await assert.rejects(cancelConfig(store, 'nope', 1, { clock }), code('MUSTER_NOT_FOUND'));
    await assert.rejects(cancelConfig(store, 'demo', 7, { clock }), code('MUSTER_NOT_FOUND'));
    await assert.rejects(initConfig(store, 'bad name!', {}, { clock }), code('MUSTER_INVALID_ARGUMENT'));
  });

  test('too soon and past activations are refused with the earliest allowed instant', async () => {
    const { clock, store } = await setup();
    const earliest = new Date(clock.now() + 3000).toISOString();
    await assert.rejects(publishConfig(store, 'demo', 1, { in: '2s', clock }), (err: MusterError) => {
      assert.equal(err.code, 'MUSTER_LEAD_TIME');
      assert.ok(err.message.includes(earliest), err.message);
      return true;
    });
    await assert.rejects(
      publishConfig(store, 'demo', 1, { at: clock.now() - 1, clock }),
      (err: MusterError) => {
        assert.equal(err.code, 'MUSTER_LEAD_TIME');
        assert.match(err.message, /in the past/);
        return true;
      },
    );
    await assert.rejects(publishConfig(store, 'demo', 1, { clock }), code('MUSTER_INVALID_ARGUMENT'));
    const ok = await publishConfig(store, 'demo', 1, {
      at: new Date(clock.now() + 3000).toISOString(),
      clock,
    });
    assert.equal(ok.version, 1);
    assert.equal((await readConfig(store, 'demo')).versions.length, 1, 'refusals changed nothing');
  });

  test('schema violations are refused and change nothing', async () => {
    const { clock, store } = await setup({
      schema: { type: 'object', properties: { delay: { type: 'number' } }, required: ['delay'] },
    });
    await assert.rejects(
      publishConfig(store, 'demo', { delay: 'slow' }, { in: '5s', clock }),
      (err: MusterError) => err.code === 'MUSTER_SCHEMA_VIOLATION' && /delay/.test(err.message),
    );
    assert.equal((await readConfig(store, 'demo')).versions.length, 0);
    await publishConfig(store, 'demo', { delay: 1 }, { in: '5s', clock, note: 'first' });
    const state = await readConfig(store, 'demo');
    assert.equal(state.versions[0]?.note, 'first');
  });

  test('cancel only while at least minLeadTime away', async () => {
    const { clock, store } = await setup();
    const v = await publishConfig(store, 'demo', 1, { in: '10s', clock });
    await clock.tick(7500);
    await assert.rejects(cancelConfig(store, 'demo', v.version, { clock }), code('MUSTER_LEAD_TIME'));
    const w = await publishConfig(store, 'demo', 2, { in: '10s', clock });
    const c = await cancelConfig(store, 'demo', w.version, { clock });
    assert.ok(c.cancelledAt !== undefined);
    await cancelConfig(store, 'demo', w.version, { clock }); // twice: no-op
    const tl = timelineOf(await readConfig(store, 'demo'));
    assert.deepEqual(
      tl.versions.map((x) => x.version),
      [1],
    );
  });

  test('concurrent publishers never get the same number', async () => {
    const { clock, store } = await setup();
    const all = await Promise.all(
      Array.from({ length: 5 }, (_, i) => publishConfig(store, 'demo', i, { in: '1m', clock })),
    );
    assert.deepEqual(all.map((v) => v.version).sort(), [1, 2, 3, 4, 5]);
  });

  test('old versions beyond keepVersions are trimmed, never the one in force', async () => {
    const { clock, store } = await setup({ keepVersions: 2 });
    for (let i = 0; i < 5; i++) {
      await publishConfig(store, 'demo', i, { in: '3s', clock });
      await clock.tick(3000);
    }
    const state = await readConfig(store, 'demo');
    assert.ok(state.versions.length <= 3, `${state.versions.length} kept`);
    assert.equal(timelineOf(state).at(clock.now())?.version, 5);
  });

  test('diff lists changed leaves by path', () => {
    assert.deepEqual(diffValues({ a: 1, b: { c: [1, 2] } }, { a: 1, b: { c: [1, 3] }, d: true }), [
      { path: '$.b.c[1]', kind: 'changed', before: 2, after: 3 },
      { path: '$.d', kind: 'added', after: true },
    ]);
  });
});
