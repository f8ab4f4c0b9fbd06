/**
 * Transparent moves with state (issue 16): counter backends own partitions through joinPartitioned
 * and hand their counters over on release; a client loop increments through the proxy while
 * partitions move 20 times. No client sees an error; no increment is lost or applied twice.
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { Agent } from 'undici';
import { joinPartitioned, type PartitionedHandle } from '../../src/partitions/index.js';
import { partitionForKey } from '../../src/placement/index.js';
import { startProxy } from '../../src/proxy/index.js';
import { openMemoryStore, type MemoryStore } from '../../src/store/index.js';
import { waitFor } from '../../src/testing/index.js';
import { call, keyFor, startBackend, testConfig, type Backend } from './helpers.js';

const COUNT = 4;
const SERVICE = 'counters';

interface CounterBackend {
  readonly id: string;
  readonly backend: Backend;
  readonly handle: PartitionedHandle;
  /** partition → key → count, for the partitions this backend owns now. */
  readonly owned: Map<string, Map<string, number>>;
}

/**
 * A backend keeping a counter per key: `GET /incr` with `x-key` adds one and answers the new value,
 * or answers 421 (applying nothing) when it does not own the key's partition. With `handoff`, its
 * `onRelease` returns the partition's counters and its `onAcquire` loads the previous owner's.
 */
async function counterBackend(store: MemoryStore, id: string, handoff: boolean): Promise<CounterBackend> {
  const owned = new Map<string, Map<string, number>>();
  const backend = await startBackend(id, (req, res) => {
    const key = String(req.headers['x-key']);
    const counters = owned.get(String(partitionForKey(key, COUNT)));
    if (counters === undefined) {
      res.writeHead(421, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: { code: 'MUSTER_NOT_OWNER', message: `${id} does not own ${key}` } }));
      return true;
    }
    const value = (counters.get(key) ?? 0) + 1;
    counters.set(key, value);
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ backend: id, value }));
    return true;
  });
  const handle = await joinPartitioned(store, {
    service: SERVICE,
    partitions: COUNT,
    id,
    address: backend.address,
    ttl: 2000,
    onAcquire: (p, { state }) => {
      const loaded =
        state === undefined ? {} : (JSON.parse(new TextDecoder().decode(state)) as Record<string, number>);
      owned.set(p, new Map(Object.entries(loaded)));
    },
    onRelease: (p) => {
      const counters = owned.get(p);
      owned.delete(p);
      return handoff && counters !== undefined ? JSON.stringify(Object.fromEntries(counters)) : undefined;
    },
  });
  return { id, backend, handle, owned };
}

export interface CounterCheck {
  /** Keys whose final counter is below the acknowledged increments. */
  readonly lost: string[];
  /** Keys whose final counter is above them (an increment applied twice). */
  readonly doubled: string[];
  /** Answers whose value was not the acknowledged count so far plus one. */
  readonly outOfStep: number;
  readonly errors: number;
}

/** Compares the backends' final counters with the increments the clients saw acknowledged. */
export function checkCounters(
  acked: ReadonlyMap<string, number>,
  final: ReadonlyMap<string, number>,
  outOfStep: number,
  errors: number,
): CounterCheck {
  const lost: string[] = [];
  const doubled: string[] = [];
  for (const [key, n] of acked) {
    const f = final.get(key) ?? 0;
    if (f < n) lost.push(key);
    if (f > n) doubled.push(key);
  }
  return { lost, doubled, outOfStep, errors };
}

/** Runs the scenario: 3 backends, a proxy, a client loop per key, `moves` moves by partition pins. */
async function scenario(handoff: boolean, moves: number): Promise<CounterCheck & { acked: number }> {
  const store = openMemoryStore();
  const agent = new Agent();
  const backends: CounterBackend[] = [];
  try {
    for (const id of ['a', 'b', 'c']) backends.push(await counterBackend(store, id, handoff));
    const proxy = await startProxy({ store, config: testConfig(SERVICE) });
    try {
      const address = proxy.addresses[0] as string;
      await waitFor(() => proxy.source.owners.size === COUNT, {
        what: 'every partition owned',
        timeoutMs: 10_000,
      });
      const keys = Array.from({ length: COUNT * 3 }, (_, i) => keyFor(i % COUNT, COUNT, `k${i}-`));
      const acked = new Map(keys.map((k) => [k, 0]));
      let total = 0;
      let outOfStep = 0;
      let errors = 0;
      let running = true;
      const loops = keys.map(async (key) => {
        while (running) {
          const r = await call(agent, address, '/incr', { key });
          if (r.status !== 200) {
            errors++;
            continue;
          }
          const value = Number(r.json()['value']);
          const expected = (acked.get(key) ?? 0) + 1;
          if (value !== expected) outOfStep++;
          acked.set(key, expected);
          total++;
        }
      });
      const instances = ['a', 'b', 'c'];
      for (let i = 0; i < moves; i++) {
        const p = String(i % COUNT);
        const from = proxy.source.owners.get(p)?.instance;
        const to = instances[(instances.indexOf(from ?? 'a') + 1) % instances.length] as string;
        const before = total;
        await waitFor(() => total >= before + 20, { what: 'load between moves', timeoutMs: 10_000 });
        await store.put(`/muster/services/${SERVICE}/pins/${p}`, JSON.stringify({ instance: to }));
        await waitFor(
          () => {
            const o = proxy.source.owners.get(p);
            return o !== undefined && o.instance === to && o.moving !== true;
          },
          { what: `partition ${p} moved to ${to}`, timeoutMs: 15_000 },
        );
      }
      const before = total;
      await waitFor(() => total >= before + 20, { what: 'load after the moves', timeoutMs: 10_000 });
      running = false;
      await Promise.all(loops);
      const final = new Map<string, number>();
      for (const b of backends)
        for (const counters of b.owned.values()) for (const [k, v] of counters) final.set(k, v);
      return { ...checkCounters(acked, final, outOfStep, errors), acked: total };
    } finally {
      await proxy.close();
    }
  } finally {
    await agent.close();
    for (const b of backends) {
      await b.handle.close();
      await b.backend.close();
    }
    await store.close();
  }
}

describe('transparent moves with state', { timeout: 120_000 }, () => {
  after(() => undefined);

  test(
    '20 moves under load: no client error, no increment lost or applied twice',
    { timeout: 90_000 },
    async () => {
      const r = await scenario(true, 20);
      assert.ok(r.acked > 400, `enough load (${r.acked} increments)`);
      assert.deepEqual(r, { lost: [], doubled: [], outOfStep: 0, errors: 0, acked: r.acked });
    },
  );

  test(
    'negative: without the hand-off the checker catches the lost increments',
    { timeout: 60_000 },
    async () => {
      const r = await scenario(false, 4);
      assert.equal(r.errors, 0, 'moves still cause no client error');
      assert.ok(r.lost.length > 0, 'the checker reports keys whose increments were lost');
      assert.ok(r.outOfStep > 0, 'clients saw counters restart');
    },
  );

  test('checker: flags a doubled and a lost key', () => {
    const r = checkCounters(
      new Map([
        ['x', 3],
        ['y', 2],
      ]),
      new Map([
        ['x', 4],
        ['y', 1],
      ]),
      0,
      0,
    );
    assert.deepEqual(r.doubled, ['x']);
    assert.deepEqual(r.lost, ['y']);
  });
});
