/**
 * `npm run bench -- store [--ops N] [--runs R]`: the memory engine's throughput.
 * Prints puts/s, txns/s and watch events/s, and the slowdown of puts when 1,000 watchers on
 * distinct prefixes are registered (a write must not scan every watcher).
 */
import { MemoryStore } from '../src/store/index.js';
import { median, rate } from './stats.js';

async function timePuts(store: MemoryStore, n: number, keyOf: (i: number) => string): Promise<number> {
  const value = new Uint8Array(64);
  const t0 = performance.now();
  for (let i = 0; i < n; i++) await store.put(keyOf(i), value);
  return performance.now() - t0;
}

async function timeTxns(store: MemoryStore, n: number): Promise<number> {
  const t0 = performance.now();
  for (let i = 0; i < n; i++) {
    const key = `/bench/txn/${i % 1000}`;
    await store.txn([{ key, target: 'version', op: '>', value: -1 }], [{ type: 'put', key, value: 'v' }], []);
  }
  return performance.now() - t0;
}

export async function run(args: string[]): Promise<void> {
  const ops = Number(args[args.indexOf('--ops') + 1]) || 200_000;
  const runs = Number(args[args.indexOf('--runs') + 1]) || 5;
  const plain: number[] = [];
  const watched: number[] = [];
  const txns: number[] = [];
  const events: number[] = [];
  for (let r = 0; r < runs; r++) {
    // Alternate the two conditions in one run so machine noise hits both alike.
    {
      const store = new MemoryStore();
      plain.push(await timePuts(store, ops, (i) => `/bench/p${i % 1000}/key`));
      await store.close();
    }
    {
      const store = new MemoryStore();
      const watches = Array.from({ length: 1000 }, (_, i) => store.watch(`/bench/p${i}/`));
      let delivered = 0;
      const consumers = watches.map(async (w) => {
        for await (const b of w) if (b.type === 'events') delivered += b.events.length;
      });
      const ms = await timePuts(store, ops, (i) => `/bench/p${i % 1000}/key`);
      const t0 = performance.now();
      while (delivered < ops) await new Promise((res) => setImmediate(res));
      const drained = performance.now() - t0;
      watched.push(ms);
      events.push(ms + drained);
      for (const w of watches) w.close();
      await Promise.all(consumers);
      await store.close();
    }
    {
      const store = new MemoryStore();
      txns.push(await timeTxns(store, ops / 2));
      await store.close();
    }
  }
  const p = median(plain);
  const w = median(watched);
  console.log(`memory engine, ${ops.toLocaleString('en-US')} ops per run, median of ${runs} runs`);
  console.log(`  puts, no watchers:               ${rate(ops, p)}`);
  console.log(`  puts, 1,000 watchers (distinct): ${rate(ops, w)}   slowdown ×${(w / p).toFixed(2)}`);
  console.log(
    `  watch events delivered:          ${rate(ops, median(events))} (put → consumer, 1,000 watchers)`,
  );
  console.log(`  txns (compare + put):            ${rate(ops / 2, median(txns))}`);
}
