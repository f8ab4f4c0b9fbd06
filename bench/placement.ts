/**
 * `npm run bench -- placement [--quick] [--svg FILE]`
 *
 * 1. Time to compute a full assignment (cold: nothing cached) and a recomputation with only current
 *    owners changed (warm: the case on most watch events) for 1,000 / 10,000 / 100,000 partitions over
 *    10 / 100 / 1,000 instances.
 * 2. Movement and balance on join, leave and weight change, side by side for muster's placement
 *    (with and without current owners), a ketama ring (`hashring`, 100 points per instance) and jump
 *    consistent hash.
 * 3. An ASCII chart (and optionally an SVG) of partitions per instance before and after a join.
 */
import { writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import HashRing from 'hashring';
import { assign, diffAssignments, partitionForKey, type PlacementInstance } from '../src/index.js';
import { jumpHash, murmur3 } from '../src/placement/hash.js';

type Placer = (
  partitions: readonly string[],
  instances: readonly PlacementInstance[],
  owners?: Map<string, string>,
) => Map<string, string>;

const ids = (n: number, prefix: string): string[] => Array.from({ length: n }, (_, i) => `${prefix}${i}`);

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1]!;
}

function timeIt(fn: () => void): { wall: number; cpu: number } {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  fn();
  const wall = performance.now() - t0;
  const c = process.cpuUsage(c0);
  return { wall, cpu: (c.user + c.system) / 1000 };
}

function timings(quick: boolean): void {
  console.log('## Time to compute an assignment (ms)\n');
  console.log('cold = nothing cached (new seed), median and min of 7 runs (3 at 100,000); owners changed =');
  console.log('same topology, current owners given (median of 3); one joins / one leaves = from the settled');
  console.log('state with owners given (incremental preference update). All wall time unless marked CPU.\n');
  console.log(
    '| partitions | instances | cold wall | cold CPU | cold min | owners changed | one joins | one leaves |',
  );
  console.log('|---:|---:|---:|---:|---:|---:|---:|---:|');
  let seed = 1000;
  for (const P of [1_000, 10_000, 100_000]) {
    for (const N of [10, 100, 1_000]) {
      const instances = ids(N, 'instance-').map((id) => ({ id }));
      assign({ partitions: P, instances, settings: { seed: seed++ } }); // JIT warm-up
      const runs = quick || P === 100_000 ? 3 : 7;
      const cold: { wall: number; cpu: number }[] = [];
      let owners = new Map<string, string>();
      for (let r = 0; r < runs; r++) {
        const s = seed++;
        cold.push(
          timeIt(() => (owners = assign({ partitions: P, instances, settings: { seed: s } }).assignments)),
        );
      }
      // Warm: same topology and seed, owners differ (one partition released), as after a watch event.
      const s = seed - 1;
      const warm: number[] = [];
      for (let r = 0; r < 3; r++) {
        owners.delete(String(r));
        warm.push(
          timeIt(() => assign({ partitions: P, instances, settings: { seed: s }, currentOwners: owners }))
            .wall,
        );
      }
      // Membership changes from the settled state: the preference table is updated incrementally.
      const joined = [...instances, { id: 'newcomer' }];
      const settings = { seed: s };
      let after = owners;
      const join = timeIt(
        () =>
          (after = assign({ partitions: P, instances: joined, settings, currentOwners: owners }).assignments),
      );
      const leave = timeIt(() => assign({ partitions: P, instances, settings, currentOwners: after }));
      const f = (x: number): string => x.toFixed(1);
      const cells = [
        P.toLocaleString('en'),
        N.toLocaleString('en'),
        f(median(cold.map((c) => c.wall))),
        f(median(cold.map((c) => c.cpu))),
        f(Math.min(...cold.map((c) => c.wall))),
        f(median(warm)),
        f(join.wall),
        f(leave.wall),
      ];
      console.log(`| ${cells.join(' | ')} |`);
    }
  }
  // Weighted: four weight groups, so one log per group and partition on top of the scan.
  for (const P of [10_000, 100_000]) {
    const weighted = ids(1_000, 'instance-').map((id, i) => ({ id, weight: 1 + (i % 4) }));
    assign({ partitions: P, instances: weighted, settings: { seed: seed++ } });
    const runs = P === 100_000 ? 3 : 7;
    const cold: { wall: number; cpu: number }[] = [];
    for (let r = 0; r < runs; r++) {
      const s = seed++;
      cold.push(timeIt(() => assign({ partitions: P, instances: weighted, settings: { seed: s } })));
    }
    const f = (x: number): string => x.toFixed(1);
    console.log(
      `| ${P.toLocaleString('en')} | 1,000 weighted 1–4 | ${f(median(cold.map((c) => c.wall)))} | ${f(
        median(cold.map((c) => c.cpu)),
      )} | ${f(Math.min(...cold.map((c) => c.wall)))} | | | |`,
    );
  }
  const keys = ids(1_000_000, 'user:');
  const t = timeIt(() => {
    for (const k of keys) partitionForKey(k, 10_000);
  });
  console.log(
    `\npartitionForKey: ${((t.wall * 1e6) / keys.length).toFixed(0)} ns per key (1,000,000 keys, 10,000 partitions)\n`,
  );
}

const muster =
  (withOwners: boolean): Placer =>
  (partitions, instances, owners) =>
    assign({ partitions, instances, ...(withOwners && owners ? { currentOwners: owners } : {}) }).assignments;

const ring: Placer = (partitions, instances) => {
  const servers: Record<string, { weight: number }> = {};
  for (const i of instances) servers[i.id] = { weight: i.weight ?? 1 };
  const r = new HashRing(servers, 'md5', { 'vnode count': 100, replicas: 1, 'max cache size': 1 });
  return new Map(partitions.map((p) => [p, r.get(p)!]));
};

// Jump consistent hash maps to bucket numbers; instance k is bucket k. Weights are not supported.
const jump: Placer = (partitions, instances) =>
  new Map(
    partitions.map((p) => [p, instances[jumpHash(murmur3(p, 1), murmur3(p, 2), instances.length)]!.id]),
  );

interface Figures {
  maxOverMean: number;
  moved: number;
  minimum: number;
}

function loadsOf(a: Map<string, string>, instances: readonly PlacementInstance[]): number[] {
  const m = new Map(instances.map((i) => [i.id, 0]));
  for (const to of a.values()) m.set(to, (m.get(to) ?? 0) + 1);
  return [...m.values()];
}

function minimumMoves(before: Map<string, string>, after: Map<string, string>): number {
  const d = new Map<string, number>();
  for (const to of after.values()) d.set(to, (d.get(to) ?? 0) + 1);
  for (const to of before.values()) d.set(to, (d.get(to) ?? 0) - 1);
  let up = 0;
  for (const v of d.values()) if (v > 0) up += v;
  return up;
}

function scenario(
  placer: Placer,
  partitions: string[],
  before: PlacementInstance[],
  after: PlacementInstance[],
): Figures {
  const settled0 = placer(partitions, before);
  const settled = placer(partitions, before, settled0);
  const next = placer(partitions, after, settled);
  const loads = loadsOf(next, after);
  const weights = after.map((i) => i.weight ?? 1);
  const totalW = weights.reduce((a, b) => a + b, 0);
  const ratio = Math.max(...loads.map((l, k) => l / ((partitions.length * weights[k]!) / totalW)));
  return {
    maxOverMean: ratio,
    moved: diffAssignments(settled, next).moved.length,
    minimum: minimumMoves(settled, next),
  };
}

function movement(quick: boolean): void {
  console.log('## Movement and balance\n');
  console.log('Each cell: moved / min (ratio), bal. moved = partitions that changed owner; min = the fewest');
  console.log('moves that reach the same loads (partitions arriving on instances that grew); bal = max over');
  console.log(
    'instances of load / weighted mean load after the change. ideal = the expected minimum from the',
  );
  console.log(
    'shares alone (P/(N+1) for a join, P/N for a leave, the change in share for a weight change).\n',
  );
  console.log(
    '| partitions × instances | change | ideal | muster (owners) | muster (pure) | ring, 100 vnodes | jump hash |',
  );
  console.log('|---|---|---:|---|---|---|---|');
  const sizes: [number, number][] = quick
    ? [[10_000, 100]]
    : [
        [1_000, 10],
        [10_000, 100],
        [100_000, 1_000],
      ];
  for (const [P, N] of sizes) {
    const partitions = ids(P, 'p');
    const base = ids(N, 'instance-').map((id) => ({ id, weight: 1 }));
    const changes: [string, PlacementInstance[], PlacementInstance[], boolean, number][] = [
      ['join', base, [...base, { id: 'newcomer', weight: 1 }], true, P / (N + 1)],
      ['leave (last)', base, base.slice(0, -1), true, P / N],
      ['leave (middle)', base, base.filter((_, i) => i !== N >> 1), false, P / N],
      [
        'weight ×2',
        base,
        base.map((x, i) => (i === 0 ? { ...x, weight: 2 } : x)),
        false,
        P * (2 / (N + 1) - 1 / N),
      ],
    ];
    for (const [name, before, after, jumpOk, ideal] of changes) {
      const cell = (f: Figures): string =>
        `${f.moved} / ${f.minimum} (×${(f.moved / Math.max(1, f.minimum)).toFixed(2)}), bal ${f.maxOverMean.toFixed(2)}`;
      const row = [
        cell(scenario(muster(true), partitions, before, after)),
        cell(scenario(muster(false), partitions, before, after)),
        cell(scenario(ring, partitions, before, after)),
        jumpOk ? cell(scenario(jump, partitions, before, after)) : 'n/a',
      ];
      const size = `${P.toLocaleString('en')} × ${N.toLocaleString('en')}`;
      console.log(`| ${size} | ${name} | ${ideal.toFixed(0)} | ${row.join(' | ')} |`);
    }
  }
  console.log();
}

function chart(svgFile: string | undefined): void {
  const partitions = 400;
  const before = ids(8, 'i').map((id) => ({ id }));
  const after = [...before, { id: 'i8' }];
  const a = assign({ partitions, instances: before });
  const b = assign({ partitions, instances: after, currentOwners: a.assignments });
  const moved = diffAssignments(a.assignments, b.assignments).moved.length;
  console.log(
    `## Partitions per instance, ${partitions} partitions, before and after i8 joins (${moved} moved)\n`,
  );
  console.log('```');
  const scale = 1;
  for (const inst of after) {
    const x = a.loads.get(inst.id) ?? 0;
    const y = b.loads.get(inst.id) ?? 0;
    console.log(
      `${inst.id.padEnd(3)} before ${String(x).padStart(3)} ${'#'.repeat(Math.round(x / scale / 2))}`.trimEnd(),
    );
    console.log(`    after  ${String(y).padStart(3)} ${'='.repeat(Math.round(y / scale / 2))}`.trimEnd());
  }
  console.log(`cap before ${a.caps.get('i0')}, after ${b.caps.get('i0')}`);
  console.log('```\n');
  if (svgFile !== undefined) {
    const rows = after.map((inst, k) => {
      const x = a.loads.get(inst.id) ?? 0;
      const y = b.loads.get(inst.id) ?? 0;
      const top = 20 + k * 28;
      return (
        `<text x="4" y="${top + 14}" font-size="12">${inst.id}</text>` +
        `<rect x="40" y="${top}" width="${x * 5}" height="11" fill="#8aa"/>` +
        `<rect x="40" y="${top + 12}" width="${y * 5}" height="11" fill="#246"/>` +
        `<text x="${46 + Math.max(x, y) * 5}" y="${top + 16}" font-size="11">${x} → ${y}</text>`
      );
    });
    const svg =
      `<svg xmlns="http://www.w3.org/2000/svg" width="420" height="${40 + after.length * 28}" font-family="sans-serif">` +
      `<text x="4" y="12" font-size="12">partitions per instance: before (light) and after (dark) i8 joins, ${moved} moved</text>` +
      rows.join('') +
      '</svg>\n';
    writeFileSync(svgFile, svg);
    console.log(`wrote ${svgFile}`);
  }
}

export async function run(args: string[]): Promise<void> {
  const quick = args.includes('--quick');
  const svgAt = args.indexOf('--svg');
  const load = (): string =>
    loadavg()
      .map((x) => x.toFixed(2))
      .join(' ');
  console.log(
    `# placement benchmark (node ${process.version}, ${cpus().length} CPUs${quick ? ', --quick' : ''})\n`,
  );
  console.log(
    `load average at start: ${load()} (wall times include waiting for the CPU; CPU times do not)\n`,
  );
  timings(quick);
  movement(quick);
  chart(svgAt >= 0 ? args[svgAt + 1] : undefined);
  console.log(`load average at end: ${load()}`);
}
