import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { parseInstance, watchInstances } from '../../src/membership/index.js';
import { MemoryStore } from '../../src/store/index.js';

const kv = (key: string, value: string) => ({
  key,
  value: new TextEncoder().encode(value),
  createRevision: 1,
  modRevision: 1,
  version: 1,
  lease: '0',
});

describe('the instance record parser (one for every reader)', () => {
  test('refuses records without an id, with an id other than the key, or not JSON objects', () => {
    const key = '/muster/services/svc/instances/a';
    assert.equal(parseInstance('svc', kv(key, JSON.stringify({ id: 'a' })))?.id, 'a');
    assert.equal(parseInstance('svc', kv(key, JSON.stringify({ state: 'active' }))), undefined);
    assert.equal(parseInstance('svc', kv(key, JSON.stringify({ id: 'b' }))), undefined);
    assert.equal(parseInstance('svc', kv(key, '[1]')), undefined);
    assert.equal(parseInstance('svc', kv(key, 'not json')), undefined);
    const defaults = parseInstance('svc', kv(key, JSON.stringify({ id: 'a' })))!;
    assert.equal(defaults.state, 'active');
    assert.equal(defaults.health, 'passing');
    assert.equal(defaults.weight, 1);
    assert.equal(defaults.address, null);
  });

  test(
    'discovery skips a malformed record, logs it once, and drops an instance overwritten with one',
    { timeout: 30_000 },
    async () => {
      const store = new MemoryStore();
      const warnings: string[] = [];
      const logger = { warn: (obj: object) => warnings.push((obj as { key: string }).key) };
      await store.put('/muster/services/svc/instances/ghost', JSON.stringify({ state: 'active' }));
      await store.put(
        '/muster/services/svc/instances/a',
        JSON.stringify({ id: 'a', address: '127.0.0.1:1' }),
      );
      const view = watchInstances(store, 'svc', { logger });
      try {
        await view.ready;
        assert.deepEqual(
          view.instances().map((i) => i.id),
          ['a'],
        );
        const left = new Promise<string>((resolve) =>
          view.on('update', (u) => {
            for (const c of u.changes) if (c.type === 'left') resolve(c.instance.id);
          }),
        );
        await store.put('/muster/services/svc/instances/a', 'garbage');
        assert.equal(await left, 'a');
        assert.equal(view.size, 0);
        assert.deepEqual(warnings.sort(), [
          '/muster/services/svc/instances/a',
          '/muster/services/svc/instances/ghost',
        ]);
      } finally {
        view.close();
        await store.close();
      }
    },
  );
});
