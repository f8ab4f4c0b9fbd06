/**
 * The calls-in-flight table (src/bus/id-table.ts) against a `Map` model, over random operations
 * that force collisions, probe runs wrapping around the end of the arrays, growth, and ids above
 * 2^31; the checker's own negative test; and the reason it exists: bus calls promote (almost)
 * nothing to the old generation.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { GCProfiler } from 'node:v8';
import { IdTable } from '../../src/bus/id-table.js';
import { MemoryStore } from '../../src/store/index.js';
import { busNodes } from './fixtures/nodes.js';

const { node } = busNodes();

interface TableLike {
  readonly size: number;
  get(id: number): number | undefined;
  set(id: number, v: number): void;
  delete(id: number): boolean;
  values(): number[];
}

/** Runs `ops` random operations on `table` and a `Map`; returns the first divergence, if any. */
function divergence(table: TableLike, ops: number, seed: number): string | undefined {
  const model = new Map<number, number>();
  let s = seed;
  const rand = (n: number): number => {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    return s % n;
  };
  // Ids from a few colliding families: same low bits (one home slot), near 2^32, and small.
  const pick = (): number => {
    const f = rand(3);
    if (f === 0) return ((rand(40) + 1) * 1024) >>> 0;
    if (f === 1) return 0xffffffff - rand(60);
    return rand(200) + 1;
  };
  for (let i = 0; i < ops; i++) {
    const id = pick();
    const op = rand(3);
    if (op === 0) {
      table.set(id, i);
      model.set(id, i);
    } else if (op === 1) {
      const a = table.delete(id);
      const b = model.delete(id);
      if (a !== b) return `op ${i}: delete(${id}) returned ${a}, expected ${b}`;
    }
    const got = table.get(id);
    if (got !== model.get(id)) return `op ${i}: get(${id}) = ${got}, expected ${model.get(id)}`;
    if (table.size !== model.size) return `op ${i}: size ${table.size}, expected ${model.size}`;
  }
  for (const [id, v] of model)
    if (table.get(id) !== v) return `end: get(${id}) = ${table.get(id)}, expected ${v}`;
  const values = table.values().sort((a, b) => a - b);
  const expected = [...model.values()].sort((a, b) => a - b);
  if (values.join() !== expected.join()) return 'end: values() differ';
  return undefined;
}

test(
  'IdTable behaves as a Map over random operations with collisions and growth',
  { timeout: 20_000 },
  () => {
    for (let seed = 1; seed <= 20; seed++) {
      assert.equal(divergence(new IdTable<number>(), 20_000, seed), undefined, `seed ${seed}`);
    }
    assert.throws(() => new IdTable<number>().set(0, 1), RangeError);
  },
);

test('the checker catches a table that loses entries on delete (negative test)', { timeout: 10_000 }, () => {
  // Deleting without the backward shift: an entry after the hole in its probe run becomes unreachable.
  class NoShift implements TableLike {
    readonly #keys = new Uint32Array(1024);
    readonly #values: number[] = new Array<number>(1024).fill(0);
    #size = 0;
    get size(): number {
      return this.#size;
    }
    get(id: number): number | undefined {
      for (let i = id & 1023; ; i = (i + 1) & 1023) {
        if (this.#keys[i] === id) return this.#values[i];
        if (this.#keys[i] === 0) return undefined;
      }
    }
    set(id: number, v: number): void {
      for (let i = id & 1023; ; i = (i + 1) & 1023) {
        if (this.#keys[i] === id || this.#keys[i] === 0) {
          if (this.#keys[i] === 0) this.#size++;
          this.#keys[i] = id;
          this.#values[i] = v;
          return;
        }
      }
    }
    delete(id: number): boolean {
      for (let i = id & 1023; ; i = (i + 1) & 1023) {
        if (this.#keys[i] === 0) return false;
        if (this.#keys[i] === id) {
          this.#keys[i] = 0;
          this.#size--;
          return true;
        }
      }
    }
    values(): number[] {
      return this.#values.filter((_, i) => this.#keys[i] !== 0);
    }
  }
  assert.match(divergence(new NoShift(), 20_000, 7) ?? '', /expected/);
});

test(
  'bus calls promote almost nothing to the old generation (issue 17: ~0.5–1 KB per call before)',
  { timeout: 60_000 },
  async () => {
    const store = new MemoryStore();
    const server = await node(store, { id: 'srv' });
    const client = await node(store, { id: 'cli' });
    await server.serve('svc', { echo: (m) => m });
    const payload = { i: 0, pad: 'x'.repeat(100) };
    const run = async (calls: number, inflight: number): Promise<void> => {
      let left = calls;
      await Promise.all(
        Array.from({ length: inflight }, async () => {
          while (left-- > 0) await client.call('svc', 'echo', payload);
        }),
      );
    };
    await run(5_000, 32); // warm-up: JIT, connection, tables at their size
    const calls = 40_000;
    const profiler = new GCProfiler();
    profiler.start();
    await run(calls, 32);
    const { statistics } = profiler.stop();
    const old = (s: (typeof statistics)[number]['beforeGC']): number =>
      s.heapSpaceStatistics.find((x) => x.spaceName === 'old_space')?.spaceUsedSize ?? 0;
    let promoted = 0;
    let scavenges = 0;
    for (const s of statistics) {
      if (s.gcType !== 'Scavenge') continue;
      scavenges++;
      promoted += old(s.afterGC) - old(s.beforeGC);
    }
    assert.ok(scavenges >= 3, `only ${scavenges} scavenges: too few to judge`);
    const perCall = promoted / calls;
    assert.ok(perCall < 100, `${perCall.toFixed(0)} bytes promoted per call (goal < 100)`);
  },
);
