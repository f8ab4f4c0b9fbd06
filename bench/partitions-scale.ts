/**
 * `npm run bench -- partitions-scale [--instances 1000] [--partitions 100000] [--crash 0.1]`
 *
 * A simulated fleet on the memory engine with a manual clock, every instance a real
 * `joinPartitioned` handle (sharing one watched view). Measures the time to converge after a fraction
 * of the instances crash (cut off from the store for good), in simulated time and in wall time, and
 * the store writes of the rebalance against the partitions that moved.
 */
import { ManualClock } from '../src/clock.js';
import { joinPartitioned, type PartitionedHandle } from '../src/partitions/index.js';
import { MemoryStore } from '../src/store/index.js';
import { FaultyStore } from '../src/testing/index.js';
import { fmt } from './stats.js';

function arg(args: string[], name: string, fallback: number): number {
  const i = args.indexOf(`--${name}`);
  const v = i >= 0 ? Number(args[i + 1]) : Number.NaN;
  return Number.isFinite(v) ? v : fallback;
}

const quiet = { info: () => undefined, warn: () => undefined, error: () => undefined };

export async function run(args: string[]): Promise<void> {
  const n = arg(args, 'instances', 1000);
  const partitions = arg(args, 'partitions', 100_000);
  const crashFraction = arg(args, 'crash', 0.1);
  const clock = new ManualClock();
  const store = new MemoryStore({ clock });
  const members: { handle: PartitionedHandle; faulty: FaultyStore }[] = [];
  let acquisitions = 0;

  const wall0 = performance.now();
  for (let i = 0; i < n; i++) {
    const faulty = new FaultyStore(store);
    const handle = await joinPartitioned(faulty, {
      service: 'scale',
      id: `i${i}`,
      partitions,
      ttl: 3000,
      clock,
      logger: quiet,
      viewStore: store,
      maxConcurrentAcquires: 1000,
      onAcquire: () => undefined,
    });
    handle.on('acquired', () => acquisitions++);
    members.push({ handle, faulty });
  }

  let live = members;
  const converged = (): boolean => {
    let total = 0;
    for (const { handle } of live) {
      const assigned = handle.assigned;
      const assumed = handle.assumed;
      if (assigned.length !== assumed.size || assigned.some((p) => !assumed.has(p))) return false;
      total += assumed.size;
    }
    return total === partitions;
  };
  const converge = async (limitMs: number): Promise<number> => {
    const t0 = clock.monotonic();
    while (clock.monotonic() - t0 < limitMs) {
      await clock.tick(50, 10);
      if (converged()) return clock.monotonic() - t0;
    }
    throw new Error(`no convergence within ${limitMs} ms of simulated time`);
  };

  const initialSim = await converge(120_000);
  const initialWall = performance.now() - wall0;
  console.log(
    `partitions-scale: ${n} instances, ${partitions.toLocaleString('en-US')} partitions, memory engine, manual clock`,
  );
  console.log(
    `initial convergence: ${fmt(initialSim)} ms simulated, ${fmt(initialWall / 1000)} s wall, ${store.revision} revisions`,
  );

  // Crash a fraction: cut off from the store for good.
  const crashCount = Math.round(n * crashFraction);
  const crashed = new Set<number>();
  for (let i = 0; crashed.size < crashCount; i++) crashed.add((i * 7919) % n);
  let orphaned = 0;
  for (const i of crashed) {
    orphaned += members[i]!.handle.assumed.size;
    members[i]!.faulty.blackhole();
  }
  live = members.filter((_, i) => !crashed.has(i));
  const rev0 = store.revision;
  const acq0 = acquisitions;
  const wall1 = performance.now();
  const sim = await converge(120_000);
  const wall = performance.now() - wall1;
  const writes = store.revision - rev0;
  const moved = acquisitions - acq0;
  console.log(
    `after ${crashCount} crashes (${orphaned.toLocaleString('en-US')} partitions orphaned): converged in ${fmt(sim)} ms simulated (TTL 3 s), ${fmt(wall / 1000)} s wall`,
  );
  console.log(
    `store writes: ${writes.toLocaleString('en-US')} for ${moved.toLocaleString('en-US')} partitions moved = ${fmt(writes / Math.max(1, moved))} per move; moved/orphaned = ×${fmt(moved / Math.max(1, orphaned))}`,
  );
  for (const i of crashed) members[i]!.faulty.crash();
  await Promise.all(live.map((m) => m.handle.close()));
  await store.close();
}
