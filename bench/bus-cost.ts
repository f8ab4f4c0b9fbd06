/**
 * `npm run bench -- bus-cost [--builds NAME=DIR,NAME=DIR] [--calls N] [--rounds R] [--subs S]
 * [--msgs M]`: what a bus call and a fan-out delivery cost, A/B inside ONE process — the way to see
 * the direction of a change on a shared, noisy machine (docs/bus.md, "Performance").
 *
 * For each build (default: this one, `dist/`), in one process with a memory store and real sockets:
 * - calls with 1 and with 32 in flight (N each, default 40,000): CPU per call (client + server,
 *   `process.cpuUsage()`), bytes allocated and bytes promoted to the old generation per call, and
 *   scavenges and old-generation collections per 100,000 calls (`v8.GCProfiler`);
 * - fan-out to S subscriber nodes (default 5), one message per event-loop turn (so each read holds one
 *   frame): CPU per delivery, median of R blocks of M messages (defaults 10 and 2,000).
 * Builds alternate block by block, so a change in the machine's load hits them alike. The heap is
 * shared, so one build's garbage can inflate another's GC figures a little (run one build alone for
 * a clean promotion figure); CPU is per block and comparable.
 *
 * An A/B: keep the old build's output, e.g. `cp -r dist /tmp/old-bus/dist && ln -s $PWD/node_modules
 * /tmp/old-bus/node_modules` before rebuilding, then `npm run bench -- bus-cost --builds
 * old=/tmp/old-bus/dist,new=dist`.
 */
import { PerformanceObserver } from 'node:perf_hooks';
import { resolve } from 'node:path';
import { GCProfiler } from 'node:v8';
import { arg } from './stats.js';

type BusModule = typeof import('../src/bus/index.js');
type StoreModule = typeof import('../src/store/index.js');

const quiet = { info: () => undefined, warn: () => undefined, error: () => undefined };
const HERE = new URL('..', import.meta.url).pathname; // dist/

interface Build {
  readonly name: string;
  call(): Promise<unknown>;
  publish(): Promise<unknown>;
  delivered: number;
  readonly subs: number;
  readonly lines: Map<string, string[]>;
  readonly fanCpu: number[];
}

async function open(name: string, dir: string, subs: number): Promise<Build> {
  const root = resolve(dir);
  const bus = (await import(`${root}/src/bus/index.js`)) as BusModule;
  const st = (await import(`${root}/src/store/index.js`)) as StoreModule;
  const store = st.openMemoryStore();
  const server = await bus.openBus(store, { logger: quiet });
  await server.serve('bench', { echo: (m) => m });
  const client = await bus.openBus(store, { logger: quiet });
  const payload = { i: 0, pad: 'x'.repeat(100) };
  const build: Build = {
    name,
    call: () => client.call('bench', 'echo', payload),
    publish: () => client.publish('fanout', { t: performance.now() }),
    delivered: 0,
    subs,
    lines: new Map(),
    fanCpu: [],
  };
  for (let i = 0; i < subs; i++) {
    const b = await bus.openBus(store, { logger: quiet });
    await b.subscribe('fanout', () => {
      build.delivered++;
    });
  }
  const view = await client.instances('topic.fanout');
  while (view.size < subs) await new Promise((r) => setTimeout(r, 10));
  return build;
}

let gcKinds: number[] = [];
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) gcKinds.push((e as { detail?: { kind?: number } }).detail?.kind ?? 0);
}).observe({ entryTypes: ['gc'] });
const MINOR = 1; // perf_hooks.constants.NODE_PERFORMANCE_GC_MINOR

async function calls(b: Build, inflight: number, n: number): Promise<void> {
  let left = n;
  await Promise.all(
    Array.from({ length: inflight }, async () => {
      while (left-- > 0) await b.call();
    }),
  );
}

async function cost(b: Build, inflight: number, n: number): Promise<void> {
  const profiler = new GCProfiler();
  gcKinds = [];
  const cpu0 = process.cpuUsage();
  profiler.start();
  await calls(b, inflight, n);
  const { statistics } = profiler.stop();
  const cpu = process.cpuUsage(cpu0);
  await new Promise((r) => setImmediate(r)); // let the gc entries arrive
  const space = (s: (typeof statistics)[number]['beforeGC'], name: string): number =>
    s.heapSpaceStatistics.find((x) => x.spaceName === name)?.spaceUsedSize ?? 0;
  let allocated = 0;
  let promoted = 0;
  let scavenges = 0;
  let previousNew: number | undefined;
  for (const s of statistics) {
    if (s.gcType === 'Scavenge') {
      scavenges++;
      promoted += space(s.afterGC, 'old_space') - space(s.beforeGC, 'old_space');
    }
    if (previousNew !== undefined) allocated += space(s.beforeGC, 'new_space') - previousNew;
    previousNew = space(s.afterGC, 'new_space');
  }
  const major = gcKinds.filter((k) => k !== MINOR).length;
  const line = `cpu ${((cpu.user + cpu.system) / n).toFixed(1)} µs/call, allocated ${(allocated / n / 1024).toFixed(2)} KB/call, promoted ${(promoted / n).toFixed(0)} B/call, scavenges ${((scavenges / n) * 1e5).toFixed(0)}/100k, old-generation GCs ${((major / n) * 1e5).toFixed(1)}/100k`;
  const key = `${inflight} in flight`;
  b.lines.set(key, [...(b.lines.get(key) ?? []), line]);
}

async function fanOut(b: Build, messages: number): Promise<void> {
  b.delivered = 0;
  const cpu0 = process.cpuUsage();
  for (let i = 0; i < messages; i++) {
    await b.publish();
    await new Promise((r) => setImmediate(r));
  }
  while (b.delivered < messages * b.subs) await new Promise((r) => setImmediate(r));
  const cpu = process.cpuUsage(cpu0);
  b.fanCpu.push((cpu.user + cpu.system) / messages / b.subs);
}

export async function run(args: string[]): Promise<void> {
  const n = Number(arg(args, '--calls') ?? 40_000);
  const rounds = Number(arg(args, '--rounds') ?? 10);
  const subs = Number(arg(args, '--subs') ?? 5);
  const msgs = Number(arg(args, '--msgs') ?? 2000);
  const specs = (arg(args, '--builds') ?? `this=${HERE}`)
    .split(',')
    .map((s) => s.split('=') as [string, string]);
  const builds: Build[] = [];
  for (const [name, dir] of specs) builds.push(await open(name, dir, subs));
  console.log(
    `bus-cost: ${builds.map((b) => b.name).join(' vs ')}, ${n} calls per block, fan-out to ${subs} subscriber nodes (one process, alternating)`,
  );
  for (const b of builds) {
    await calls(b, 8, 5000); // warm-up: JIT, connections, tables at their size
    await fanOut(b, 2000);
    b.fanCpu.length = 0;
  }
  for (let r = 0; r < 2; r++)
    for (const inflight of [1, 32]) for (const b of builds) await cost(b, inflight, n);
  for (let r = 0; r < rounds; r++) for (const b of builds) await fanOut(b, msgs);
  for (const b of builds) {
    for (const [key, lines] of b.lines)
      for (const line of lines) console.log(`${b.name.padEnd(8)} ${key.padEnd(14)} ${line}`);
    const sorted = [...b.fanCpu].sort((x, y) => x - y);
    console.log(
      `${b.name.padEnd(8)} fan-out        cpu per delivery: median ${(sorted[Math.floor(sorted.length / 2)] ?? 0).toFixed(1)} µs, min ${(sorted[0] ?? 0).toFixed(1)} µs (${sorted.length} blocks of ${msgs} messages)`,
    );
  }
  process.exit(0);
}
