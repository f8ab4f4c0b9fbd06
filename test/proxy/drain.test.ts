/**
 * `muster drain` writes its own key (`services/<s>/drain/<instance>`, under the instance's lease), not
 * a field of the instance's record: an instance that rewrites its record afterwards (a health, weight
 * or notes change) used to write `state: active` back and silently end the drain.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { join, type Member } from '../../src/membership/index.js';
import { openServiceView, type ServiceViewHandle } from '../../src/partitions/index.js';
import { drainInstance, undrainInstance } from '../../src/proxy/index.js';
import { openStore, type Store } from '../../src/store/index.js';

const SERVICE = 'drained';

/** Resolves when `check()` holds for the view (checked now and after every change). */
function until(view: ServiceViewHandle, check: () => boolean, what: string): Promise<void> {
  return new Promise((resolve, reject) => {
    if (check()) return resolve();
    const timer = setTimeout(() => {
      off();
      reject(new Error(`timed out waiting for ${what}`));
    }, 5_000);
    const off = view.subscribe(() => {
      if (!check()) return;
      clearTimeout(timer);
      off();
      resolve();
    });
  });
}

describe('muster drain (a key of its own)', { timeout: 30_000 }, () => {
  let store: Store;
  let view: ServiceViewHandle;
  let a: Member;
  let b: Member;
  before(async () => {
    store = await openStore('memory:');
    await store.put(`/muster/services/${SERVICE}/spec`, JSON.stringify({ partitions: 8 }));
    a = await join(store, { service: SERVICE, id: 'a', address: '127.0.0.1:1', ttl: '5s' });
    b = await join(store, { service: SERVICE, id: 'b', address: '127.0.0.1:2', ttl: '5s' });
    view = openServiceView(store, SERVICE);
    await view.ready();
  });
  after(async () => {
    view.close();
    await a.leave();
    await b.leave();
    await store.close();
  });

  const assignedTo = (id: string): number => view.assignment().byInstance.get(id)?.size ?? 0;

  test('the drain survives the instance rewriting its own record; --undo ends it', async () => {
    await until(view, () => assignedTo('a') > 0 && assignedTo('b') > 0, 'both instances assigned');
    await drainInstance(store, SERVICE, 'a');
    await until(view, () => view.instances.get('a')?.state === 'draining', 'a draining');
    // the view throttles its assignment when a computation was slow (a loaded machine): it may show
    // the drain a moment after the state, and notifies when it does
    await until(view, () => assignedTo('a') === 0 && assignedTo('b') === 8, "a's partitions on b");
    // The agent rewrites its record (here: new notes) — the drain must stay.
    const before = view.revision;
    await a.update({ notes: { reason: 'health changed' } });
    await until(
      view,
      () => view.revision > before && view.instances.get('a')?.notes !== undefined,
      'rewrite seen',
    );
    assert.equal(view.instances.get('a')?.state, 'draining', 'the rewrite cleared the drain');
    assert.equal(assignedTo('a'), 0);

    // The instance's own record is untouched: it says what the instance wrote.
    const record = await store.get(`/muster/services/${SERVICE}/instances/a`);
    assert.equal(
      (JSON.parse(Buffer.from(record?.value ?? []).toString()) as { state: string }).state,
      'active',
    );

    await undrainInstance(store, SERVICE, 'a');
    await until(view, () => view.instances.get('a')?.state === 'active', 'a active again');
    await until(view, () => assignedTo('a') > 0, 'partitions for a again (the assignment may lag: above)');
    await assert.rejects(undrainInstance(store, SERVICE, 'a'), { code: 'MUSTER_NOT_FOUND' });
  });

  test('the drain goes with the registration (its lease); an unknown instance is MUSTER_NOT_FOUND', async () => {
    await drainInstance(store, SERVICE, 'b');
    const key = `/muster/services/${SERVICE}/drain/b`;
    const kv = await store.get(key);
    assert.equal(kv?.lease, b.session.leaseId);
    await assert.rejects(drainInstance(store, SERVICE, 'nobody'), { code: 'MUSTER_NOT_FOUND' });
    await b.leave();
    assert.equal(await store.get(key), undefined);
  });
});
