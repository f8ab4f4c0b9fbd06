/**
 * Hand-off of state between owners (docs/partitions.md, "Hand-off of state"): what a graceful
 * release returns reaches the next owner's `onAcquire`; a lost ownership hands nothing over; the
 * old owner publishes `moving` before its work stops.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  joinPartitioned,
  MAX_HANDOFF_BYTES,
  type AcquireHandler,
  type PartitionedHandle,
} from '../../src/partitions/index.js';
import { openMemoryStore, type MemoryStore } from '../../src/store/index.js';
import { waitFor } from '../../src/testing/index.js';

const SERVICE = 'ho';
const OWNER = `/muster/services/${SERVICE}/owners/0`;
const PIN = `/muster/services/${SERVICE}/pins/0`;

interface Seen {
  token: number;
  state: string | undefined;
}

async function join(
  store: MemoryStore,
  id: string,
  seen: Seen[],
  onRelease: () => unknown,
  onAcquire?: AcquireHandler,
): Promise<PartitionedHandle> {
  return joinPartitioned(store, {
    service: SERVICE,
    partitions: 1,
    id,
    ttl: 2000,
    logger: { info: () => undefined, warn: () => undefined, error: () => undefined },
    onAcquire: (p, ctx) => {
      seen.push({ token: ctx.token, state: ctx.state && new TextDecoder().decode(ctx.state) });
      return onAcquire?.(p, ctx);
    },
    onRelease,
  });
}

async function ownerOf(
  store: MemoryStore,
  partition = '0',
): Promise<{ instance: string; moving?: boolean } | undefined> {
  const kv = await store.get(`/muster/services/${SERVICE}/owners/${partition}`);
  return kv === undefined
    ? undefined
    : (JSON.parse(new TextDecoder().decode(kv.value)) as { instance: string; moving?: boolean });
}

describe('partition hand-off of state', { timeout: 60_000 }, () => {
  test('a move and a leave hand the state over; the old owner is marked moving before its work stops', async () => {
    const store = openMemoryStore();
    const a: Seen[] = [];
    const b: Seen[] = [];
    let movingWhenStopped: boolean | undefined;
    const ha = await join(store, 'a', a, async () => {
      movingWhenStopped = (await ownerOf(store))?.moving;
      return 'from-a';
    });
    await waitFor(() => a.length === 1, { what: 'a owns 0' });
    assert.equal(a[0]?.state, undefined, 'a first acquisition has no state');
    const hb = await join(store, 'b', b, () => 'from-b');
    await store.put(PIN, JSON.stringify({ instance: 'b' }));
    await waitFor(() => b.length === 1, { what: 'b owns 0' });
    assert.equal(b[0]?.state, 'from-a');
    assert.equal(movingWhenStopped, true, 'the owner record said moving while the work stopped');
    assert.ok((b[0]?.token ?? 0) > (a[0]?.token ?? 0));
    await store.delete(PIN);
    await hb.close(); // the leave path (batched deletes) hands over too
    await waitFor(() => a.length === 2, { what: 'a owns 0 again' });
    assert.equal(a[1]?.state, 'from-b');
    assert.equal(
      await store.get(`/muster/services/${SERVICE}/handoff/0`),
      undefined,
      'the new owner took it',
    );
    await ha.close();
    await store.close();
  });

  test('issue-15: a leave marks every owner record moving in one write; a key that changed hands leaves the others marked', async () => {
    const store = openMemoryStore();
    const owners = `/muster/services/${SERVICE}/owners/`;
    const leaveOnce = async (steal: boolean) => {
      const atStop = new Map<string, { moving?: boolean; modRevision: number }>();
      const h = await joinPartitioned(store, {
        service: SERVICE,
        partitions: 4,
        id: 'a',
        ttl: 2000,
        logger: { info: () => undefined, warn: () => undefined, error: () => undefined },
        onAcquire: () => undefined,
        onRelease: async (p) => {
          const kv = await store.get(`${owners}${p}`);
          const rec = kv && (JSON.parse(new TextDecoder().decode(kv.value)) as { moving?: boolean });
          atStop.set(p, {
            ...(rec?.moving === undefined ? {} : { moving: rec.moving }),
            modRevision: kv?.modRevision ?? 0,
          });
        },
      });
      await waitFor(() => h.assumed.size === 4, { what: 'a owns every partition' });
      if (steal) {
        // Another incarnation of key 3 in the same tick as the leave: the handle has not seen it, so
        // only the store's compare on the token refuses the write.
        void store.delete(`${owners}3`);
        void store.put(`${owners}3`, JSON.stringify({ instance: 'x', since: '' }));
      }
      await h.close();
      return atStop;
    };

    const batched = await leaveOnce(false);
    assert.deepEqual([...batched.keys()].sort(), ['0', '1', '2', '3']);
    assert.ok(
      [...batched.values()].every((r) => r.moving === true),
      'every record said moving at the stop',
    );
    assert.equal(
      new Set([...batched.values()].map((r) => r.modRevision)).size,
      1,
      'all written in one transaction',
    );
    assert.equal((await store.range(owners)).count, 0, 'every key released');

    const fallback = await leaveOnce(true);
    for (const p of ['0', '1', '2'])
      assert.equal(fallback.get(p)?.moving, true, `partition ${p} marked moving`);
    assert.equal((await ownerOf(store, '3'))?.instance, 'x', "the other incarnation's key is left alone");
    assert.equal((await store.range(owners)).count, 1);
    await store.close();
  });

  test("the work's resolved value is the state when onRelease returns nothing", async () => {
    const store = openMemoryStore();
    const a: Seen[] = [];
    const b: Seen[] = [];
    const ha = await join(
      store,
      'a',
      a,
      () => undefined,
      async (_p, { signal }) => {
        await new Promise((resolve) => signal.addEventListener('abort', resolve, { once: true }));
        return new TextEncoder().encode('work-state');
      },
    );
    await waitFor(() => a.length === 1, { what: 'a owns 0' });
    const hb = await join(store, 'b', b, () => undefined);
    await store.put(PIN, JSON.stringify({ instance: 'b' }));
    await waitFor(() => b.length === 1, { what: 'b owns 0' });
    assert.equal(b[0]?.state, 'work-state');
    await hb.close();
    await ha.close();
    await store.close();
  });

  test('a stale owner (its key gone mid-release) writes no state; too large a state is dropped', async () => {
    const store = openMemoryStore();
    const a: Seen[] = [];
    const b: Seen[] = [];
    const ha = await join(store, 'a', a, async () => {
      await store.delete(OWNER); // the key expires or an operator deletes it while a drains
      return 'stale-state';
    });
    await waitFor(() => a.length === 1, { what: 'a owns 0' });
    const errors: unknown[] = [];
    const hb = await join(store, 'b', b, () => 'x'.repeat(MAX_HANDOFF_BYTES + 1));
    hb.on('error', (err) => errors.push(err));
    await store.put(PIN, JSON.stringify({ instance: 'b' }));
    await waitFor(() => b.length === 1, { what: 'b owns 0' });
    assert.equal(b[0]?.state, undefined, 'a stale owner wrote no state');
    await store.delete(PIN);
    await hb.close();
    await waitFor(() => a.length === 2, { what: 'a owns 0 again' });
    assert.equal(a[1]?.state, undefined, 'an oversized state is not handed over');
    assert.ok(errors.some((e) => (e as { code?: string }).code === 'MUSTER_VALUE_TOO_LARGE'));
    await ha.close();
    await store.close();
  });
});
