/**
 * `npm run bench -- agent [--agents 10] [--partitions 64] [--trials 20] [--children 100] [--ttl 3] [--vcpu-gaps] [--from-quiet]`
 *
 * `muster agent` processes on a one-member etcd, children are `sleep` (started through `sh -c` that
 * appends `<partition> <instance> <epoch ns>` to a file and then `exec`s sleep, so a start is seen
 * with its own timestamp). Figures:
 * - kill -9 of an agent → every descendant gone (p50/p99/max, survivors);
 * - crash failover incl. the new child's start (from the kill to each partition's new start);
 * - graceful hand-off incl. the new child's start (SIGTERM of an agent → each partition's new start);
 *   split by successor, by partitions taken and (`--vcpu-gaps`, needs `perf`) by whether the host
 *   took a vCPU away during the trial (bench/vcpu-gaps.ts);
 * - crash → first restart (SIGKILL of one child → its replacement's start);
 * - renewal failure (black-holed store link): children gone before the lease expires, by how much;
 * - agent RSS and idle CPU with `--children` children;
 * - side by side: supervisord with `--partitions` `sleep` programs — RSS, restart latency, and how
 *   many children survive a SIGKILL of supervisord.
 * Smoke-run with tiny sizes (`--agents 3 --partitions 8 --trials 2 --children 10`); figures come from
 * a quiet machine.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, openSync, readFileSync, readSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { openServiceView } from '../src/partitions/index.js';
import { openStore } from '../src/store/index.js';
import type { Store } from '../src/store/types.js';
import { startEtcd, startFaultProxy } from '../src/testing/index.js';
import { fmt, latencySummary } from './stats.js';
import { gapMsWithin, recordVcpuGaps, vcpuGapsPerf } from './vcpu-gaps.js';

const BIN = new URL('../../bin/muster.js', import.meta.url).pathname;

export function num(args: string[], name: string, fallback: number): number {
  const i = args.indexOf(`--${name}`);
  const v = i >= 0 ? Number(args[i + 1]) : Number.NaN;
  return Number.isFinite(v) ? v : fallback;
}

export function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

/** Every descendant of `pid` (children of children…), from /proc. */
export function descendants(pid: number): number[] {
  const parent = new Map<number, number>();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      parent.set(Number(d), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
    } catch {
      // gone
    }
  }
  const out: number[] = [];
  const walk = (p: number): void => {
    for (const [c, pp] of parent) {
      if (pp === p) {
        out.push(c);
        walk(c);
      }
    }
  };
  walk(pid);
  return out;
}

/** 20 s: long enough for V8's memory reducer (8 s after the last full collection, then its rounds). */
const IDLE_WINDOW_MS = 20_000;

function rssKiB(pid: number, field: 'VmRSS' | 'VmHWM' = 'VmRSS'): number {
  const m = new RegExp(`${field}:\\s+(\\d+)`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m?.[1] ?? 0);
}

function cpuTicks(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(f[11]) + Number(f[12]);
}

export async function until(
  what: string,
  fn: () => boolean | Promise<boolean>,
  timeoutMs = 30_000,
  every = 1,
): Promise<void> {
  const end = performance.now() + timeoutMs;
  while (!(await fn())) {
    if (performance.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(every);
  }
}

export interface Starts {
  /** Every start so far, in order: partition, instance, epoch ms (the same array, grown). */
  read(): readonly { partition: string; instance: string; t: number }[];
}

/**
 * The start stamps the bench's `sh -c` children append to `path` (`<partition> <instance> <epoch ns>`),
 * read incrementally: the benches poll this every 2 ms during a hand-off, once per partition, and
 * reading and parsing the whole file each time (hundreds of lines by the later trials) cost the bench
 * a large share of a core — on the 2-core host, CPU the agents being measured then waited for. Each
 * read now costs one `read` of the bytes appended since the last one.
 */
export function startsFile(path: string): Starts {
  const seen: { partition: string; instance: string; t: number }[] = [];
  const buf = Buffer.allocUnsafe(64 * 1024);
  let fd: number | undefined;
  let offset = 0;
  let partial = '';
  return {
    read() {
      if (fd === undefined) {
        try {
          fd = openSync(path, 'r');
        } catch {
          return seen;
        }
      }
      for (;;) {
        const n = readSync(fd, buf, 0, buf.length, offset);
        if (n <= 0) break;
        offset += n;
        partial += buf.toString('latin1', 0, n);
      }
      const lines = partial.split('\n');
      partial = lines.pop() ?? '';
      for (const l of lines) {
        if (l === '') continue;
        const [partition, instance, ns] = l.split(' ');
        seen.push({ partition: partition ?? '', instance: instance ?? '', t: Number(ns) / 1e6 });
      }
      return seen;
    },
  };
}

interface AgentProc {
  readonly id: string;
  readonly child: ChildProcess;
  readonly dir: string;
  readonly exited: Promise<void>;
  api(): { url: string; token: string };
}

/**
 * CPU time of every thread of `pid` in ns (`/proc/<pid>/task/<tid>/schedstat`, first field): the
 * clock-tick counters of `/proc/<pid>/stat` move in 10 ms steps, as coarse as what is measured here.
 */
export function threadCpuNs(pid: number | undefined): number {
  let n = 0;
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      try {
        n += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
      } catch {
        // the thread ended meanwhile
      }
    }
  } catch {
    return Number.NaN;
  }
  return n;
}

export async function run(args: string[]): Promise<void> {
  const nAgents = num(args, 'agents', 10);
  const partitions = num(args, 'partitions', 64);
  const trials = num(args, 'trials', 20);
  const nChildren = num(args, 'children', 100);
  const ttl = num(args, 'ttl', 3);
  const root = mkdtempSync(join(tmpdir(), 'bench-agent-'));
  const cluster = await startEtcd({ members: 1 });
  const store: Store = await openStore(cluster.url);
  const startsPath = join(root, 'starts');
  const starts = startsFile(startsPath);
  const procs = new Map<string, AgentProc>();
  let serial = 0;

  const yaml = (
    id: string,
    storeUrl: string,
    service: string,
    count: number,
    grace = '0ms',
  ): string => `store: ${storeUrl}
service: ${service}
instance: { id: ${id} }
session: { ttl: ${ttl}s }
partitions: { count: ${count} }
stateDir: ${root}/${id}
relay: false
log: { level: warn }
run:
  command: ["/bin/sh", "-c", "echo \\"$MUSTER_PARTITION $MUSTER_INSTANCE $(date +%s%N)\\" >> ${startsPath}; exec sleep 100000"]
  stop: { grace: ${grace} }
  restart: { backoff: { initial: 1ms, max: 1s } }
`;
  const startAgent = (service: string, count: number, storeUrl = cluster.url): AgentProc => {
    const id = `a${serial++}`;
    const dir = join(root, id);
    const file = join(root, `${id}.yaml`);
    writeFileSync(file, yaml(id, storeUrl, service, count));
    const child = spawn(process.execPath, [BIN, 'agent', '--config', file], {
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    const p: AgentProc = {
      id,
      child,
      dir,
      exited,
      api() {
        const run = JSON.parse(readFileSync(join(dir, `agent-${service}.json`), 'utf8')) as { api: string };
        return { url: run.api, token: readFileSync(join(dir, `${service}.token`), 'utf8').trim() };
      },
    };
    procs.set(id, p);
    return p;
  };
  const rows = async (p: AgentProc): Promise<{ partition: string; pid: number | null; state: string }[]> => {
    try {
      const { url, token } = p.api();
      const res = await fetch(`${url}/v1/partitions`, { headers: { authorization: `Bearer ${token}` } });
      return (
        (await res.json()) as { partitions: { partition: string; pid: number | null; state: string }[] }
      ).partitions;
    } catch {
      return [];
    }
  };
  const settled = async (service: string, expect: number): Promise<boolean> => {
    let n = 0;
    for (const p of procs.values()) {
      if (p.child.exitCode !== null || p.child.signalCode !== null) continue;
      n += (await rows(p)).filter((r) => r.state === 'ready' || r.state === 'starting').length;
    }
    void service;
    return n === expect;
  };
  // Placement has reached its target: every live agent is registered, every partition is owned by
  // the instance the assignment names and none is moving, and every child is running. A trial
  // starts only then, so one hand-off is not queued behind the rebalancing onto the previous
  // trial's replacement agent (the throttle moves a few partitions at a time).
  const view = openServiceView(store, 'bench');
  const balanced = async (): Promise<boolean> => {
    const live = [...procs.values()].filter((p) => p.child.exitCode === null && p.child.signalCode === null);
    if (view.instances.size !== live.length) return false;
    const target = view.assignment();
    for (const partition of target.partitions) {
      const owner = view.owners.get(partition);
      if (
        owner === undefined ||
        owner.moving === true ||
        owner.instance !== target.byPartition.get(partition)
      )
        return false;
    }
    return settled('bench', partitions);
  };
  /** The first start stamp of `partition` after `after` (ms since the epoch). */
  const stampAfter = (partition: string, after: number): { instance: string; t: number } | undefined =>
    starts.read().find((s) => s.partition === partition && s.t > after);
  const latestStart = (partition: string, after: number): number | undefined =>
    stampAfter(partition, after)?.t;

  /** CPU time (ns) every thread of the agents and etcd has used so far. */
  const fleetCpuNs = (): number =>
    [...[...procs.values()].map((p) => p.child.pid), ...cluster.members.map((m) => m.pid)]
      .map(threadCpuNs)
      .reduce((n, v) => n + (Number.isNaN(v) ? 0 : v), 0);
  /**
   * `--from-quiet`: wait (up to 10 s) until the agents and etcd used under 5 % of a core over 250 ms —
   * the previous trial's deferred work (spares forked `SPARE_DELAY_MS` after the last start, status
   * records 1 s after a change, the replacement agent's start-up) done — so trials are independent.
   */
  const fromQuiet = args.includes('--from-quiet');
  /** `--vcpu-gaps`: perf sampling through the hand-off section (stopped in `finally` too). */
  let recorder: ReturnType<typeof recordVcpuGaps> | undefined;
  const quiet = async (): Promise<void> => {
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      const before = fleetCpuNs();
      await sleep(250);
      if (fleetCpuNs() - before < 0.05 * 250e6) return;
    }
  };

  const out: string[] = [];
  const say = (line: string): void => {
    out.push(line);
    process.stdout.write(`${line}\n`);
  };
  say(`# agent benchmark: ${nAgents} agents, ${partitions} partitions, ttl ${ttl}s, ${trials} trials`);
  try {
    for (let i = 0; i < nAgents; i++) startAgent('bench', partitions);
    await until('all partitions running', () => settled('bench', partitions), 120_000, 100);

    // kill -9 → every descendant gone; crash failover incl. child start.
    const goneMs: number[] = [];
    const failoverMs: number[] = [];
    let survivors = 0;
    for (let t = 0; t < trials; t++) {
      const victim = [...procs.values()].find(
        (p) => p.child.exitCode === null && p.child.signalCode === null,
      )!;
      const mine = (await rows(victim)).map((r) => r.partition);
      const desc = descendants(victim.child.pid!);
      const t0 = performance.now();
      const wall0 = Date.now();
      victim.child.kill('SIGKILL');
      await until('descendants gone', () => desc.every((d) => !alive(d)), 5000, 1).catch(() => undefined);
      goneMs.push(performance.now() - t0);
      survivors += desc.filter(alive).length;
      procs.delete(victim.id);
      startAgent('bench', partitions);
      await until('failover', () => mine.every((p) => latestStart(p, wall0) !== undefined), 30_000, 5);
      for (const p of mine) failoverMs.push((latestStart(p, wall0) as number) - wall0);
      await until('settled', () => settled('bench', partitions), 60_000, 50);
    }
    say(`kill -9 → every descendant gone: ${latencySummary(goneMs)}; survivors ${survivors}`);
    say(`crash failover incl. child start: ${latencySummary(failoverMs)} (goal ≤ ttl + 0.5 s)`);

    // graceful hand-off incl. child start, each from a balanced fleet.
    await until('balanced', balanced, 60_000, 50);
    const handoffMs: number[] = [];
    // Diagnosis of the tail: each sample by its successor — the agent started after the previous
    // trial (joined seconds before: its start-up and the spares it forks `SPARE_DELAY_MS` after its
    // last start may overlap this trial) or an older one — and by how many of the victim's partitions that
    // successor took (a third start finds no spare waiting and forks).
    const bySuccessor = { fresh: [] as number[], older: [] as number[] };
    const byTaken = new Map<number, number[]>();
    let replacement: string | undefined;
    // `--vcpu-gaps`: whether the slow trials are the ones in which the host took a vCPU away.
    const perf = vcpuGapsPerf(args, say);
    recorder = perf === undefined ? undefined : recordVcpuGaps(perf, join(root, 'vcpu.perf'));
    const windows: { from: number; to: number; ms: number[] }[] = [];
    for (let t = 0; t < trials; t++) {
      if (fromQuiet) await quiet();
      const victim = [...procs.values()].find(
        (p) => p.child.exitCode === null && p.child.signalCode === null,
      )!;
      const mine = (await rows(victim)).map((r) => r.partition);
      const wall0 = Date.now();
      victim.child.kill('SIGTERM');
      await until('hand-off', () => mine.every((p) => latestStart(p, wall0) !== undefined), 30_000, 2);
      const taken = new Map<string, number>();
      const samples = mine.map((p) => {
        const s = stampAfter(p, wall0)!;
        taken.set(s.instance, (taken.get(s.instance) ?? 0) + 1);
        return { ms: s.t - wall0, instance: s.instance };
      });
      windows.push({
        from: wall0,
        to: wall0 + Math.max(...samples.map((s) => s.ms)),
        ms: samples.map((s) => s.ms),
      });
      for (const s of samples) {
        handoffMs.push(s.ms);
        (s.instance === replacement ? bySuccessor.fresh : bySuccessor.older).push(s.ms);
        const n = Math.min(taken.get(s.instance) ?? 1, 3);
        byTaken.set(n, [...(byTaken.get(n) ?? []), s.ms]);
      }
      await victim.exited;
      procs.delete(victim.id);
      replacement = startAgent('bench', partitions).id;
      await until('balanced', balanced, 60_000, 50);
    }
    say(`graceful hand-off incl. child start: ${latencySummary(handoffMs)} (goal p99 ≤ 300 ms)`);
    say(
      `  by successor: the previous trial's replacement agent ${latencySummary(bySuccessor.fresh)}; older agents ${latencySummary(bySuccessor.older)}`,
    );
    say(
      `  by partitions the successor took: ${[...byTaken]
        .sort((a, b) => a[0] - b[0])
        .map(([n, ms]) => `${n === 3 ? '3+' : n}: ${latencySummary(ms)}`)
        .join('; ')}`,
    );
    if (recorder !== undefined) {
      const gaps = await recorder.stop();
      const clear: number[] = [];
      const hit: number[] = [];
      const gapMs: number[] = [];
      for (const w of windows) {
        const ms = gapMsWithin(gaps, w.from * 1000, w.to * 1000);
        (ms > 0 ? hit : clear).push(...w.ms);
        if (ms > 0) gapMs.push(ms);
      }
      say(
        `  by vCPU gaps (≥ 5 ms without a sample on a CPU: the host did not run it; bench/vcpu-gaps.ts): trials with none ${latencySummary(clear)}; ${gapMs.length} trials with some${gapMs.length === 0 ? '' : ` (${gapMs.map((m) => fmt(m, 0)).join(', ')} ms of gaps) ${latencySummary(hit)}`}`,
      );
    }

    // crash → first restart.
    const restartMs: number[] = [];
    for (let t = 0; t < trials; t++) {
      // The t-th running child over all agents (an agent may own nothing after the moves above).
      const all = (await Promise.all([...procs.values()].map((p) => rows(p))))
        .flat()
        .filter((x) => x.pid !== null && x.state === 'ready');
      const r = all[t % Math.max(1, all.length)];
      if (r === undefined) continue;
      const wall0 = Date.now();
      try {
        process.kill(r.pid as number, 'SIGKILL');
      } catch {
        continue; // the child exited between the listing and the kill (a restart already under way)
      }
      await until('restart', () => latestStart(r.partition, wall0) !== undefined, 10_000, 1);
      restartMs.push((latestStart(r.partition, wall0) as number) - wall0);
      await sleep(50);
    }
    say(`crash → first restart: ${latencySummary(restartMs)} (goal ≤ 100 ms)`);
    for (const p of procs.values()) p.child.kill('SIGTERM');
    await Promise.all([...procs.values()].map((p) => p.exited));
    procs.clear();

    // renewal failure: black-holed link; children gone before the lease can expire.
    const margins: number[] = [];
    for (let t = 0; t < Math.max(1, Math.min(trials, 5)); t++) {
      const proxy = await startFaultProxy({ target: cluster.endpoints[0] as string });
      const p = startAgent(`bh${t}`, 4, `etcd://${proxy.endpoint}`);
      await until(
        'bh running',
        async () => (await rows(p)).filter((r) => r.state === 'ready').length === 4,
        30_000,
        20,
      );
      const pids = (await rows(p)).map((r) => r.pid as number);
      const key = `/muster/services/bh${t}/instances/${p.id}`;
      let expired = 0;
      const watch = store.watch({ key });
      const watching = (async () => {
        for await (const b of watch) {
          if (b.type === 'events' && b.events.some((e) => e.type === 'delete')) {
            expired = performance.now();
            return;
          }
        }
      })();
      proxy.blackhole();
      await until('children gone', () => pids.every((x) => !alive(x)), 20_000, 1);
      const gone = performance.now();
      await until('lease expired', () => expired > 0, 20_000, 5);
      watch.close();
      await watching;
      margins.push(expired - gone);
      proxy.pass();
      p.child.kill('SIGKILL');
      await p.exited;
      procs.delete(p.id);
      await proxy.close();
    }
    say(
      `renewal failure: children gone before the lease expired by ${latencySummary(margins)} (goal ≥ 500 ms; expiry as seen by a watcher)`,
    );

    // RSS and idle CPU with nChildren children.
    const big = startAgent('rss', nChildren);
    await until(
      'rss children',
      async () => (await rows(big)).filter((r) => r.state === 'ready').length === nChildren,
      120_000,
      100,
    );
    await sleep(2000);
    const rss = rssKiB(big.child.pid!);
    const c0 = cpuTicks(big.child.pid!);
    const w0 = performance.now();
    await sleep(IDLE_WINDOW_MS);
    const cpu = ((cpuTicks(big.child.pid!) - c0) / 100 / ((performance.now() - w0) / 1000)) * 100;
    // The goal row is the first reading (2 s after the last child is ready, start-up garbage
    // included); the reading after the idle window is the agent at rest (V8's memory reducer returns
    // the start-up garbage 8 s or more after its last full collection), the peak is VmHWM.
    const rssRest = rssKiB(big.child.pid!);
    const rssPeak = rssKiB(big.child.pid!, 'VmHWM');
    say(
      `agent with ${nChildren} children: RSS ${fmt(rss / 1024)} MB (goal ≤ 60 MB), ${fmt(rssRest / 1024)} MB after ${IDLE_WINDOW_MS / 1000} s idle, peak ${fmt(rssPeak / 1024)} MB; idle CPU ${fmt(cpu, 3)}% of a core, ${fmt(cpu / nChildren, 4)}% per partition (goal ≤ 0.1%)`,
    );
    big.child.kill('SIGTERM');
    await big.exited;
    procs.delete(big.id);
  } finally {
    await recorder?.stop().catch(() => []);
    for (const p of procs.values()) p.child.kill('SIGKILL');
    await Promise.all([...procs.values()].map((p) => p.exited));
    view.close();
    await store.close();
    await cluster.close();
  }
  await supervisord(root, partitions, trials, say);
}

/** supervisord supervising `n` sleeps: RSS, restart latency, survivors of its SIGKILL. */
async function supervisord(root: string, n: number, trials: number, say: (l: string) => void): Promise<void> {
  if (spawnSync('sh', ['-c', 'command -v supervisord']).status !== 0) {
    say('supervisord: not installed (Debian: supervisor); skipped');
    return;
  }
  const dir = join(root, 'supervisord');
  spawnSync('mkdir', ['-p', dir]);
  const conf = join(dir, 'supervisord.conf');
  writeFileSync(
    conf,
    `[supervisord]
nodaemon=true
logfile=${dir}/supervisord.log
pidfile=${dir}/supervisord.pid
childlogdir=${dir}

[program:sleep]
command=sleep 100000
process_name=%(program_name)s_%(process_num)02d
numprocs=${n}
autorestart=true
startsecs=0
stdout_logfile=NONE
stderr_logfile=NONE
`,
  );
  const sv = spawn('supervisord', ['-c', conf], { stdio: 'ignore' });
  const svExit = new Promise<void>((r) => sv.once('exit', () => r()));
  try {
    await until('supervisord children', () => descendants(sv.pid!).length === n, 60_000, 50);
    await sleep(1000);
    const rss = rssKiB(sv.pid!);
    const restartMs: number[] = [];
    for (let t = 0; t < trials; t++) {
      const before = new Set(descendants(sv.pid!));
      const victim = [...before][t % before.size] as number;
      const t0 = performance.now();
      process.kill(victim, 'SIGKILL');
      await until('supervisord restart', () => descendants(sv.pid!).some((d) => !before.has(d)), 30_000, 1);
      restartMs.push(performance.now() - t0);
    }
    const kids = descendants(sv.pid!);
    sv.kill('SIGKILL');
    await svExit;
    await sleep(500);
    const survivors = kids.filter(alive);
    say(
      `supervisord with ${n} sleeps: RSS ${fmt(rss / 1024)} MB; crash → restart ${latencySummary(restartMs)}; after SIGKILL of supervisord ${survivors.length}/${kids.length} children survive`,
    );
    for (const pid of survivors) process.kill(pid, 'SIGKILL');
  } finally {
    sv.kill('SIGKILL');
    await svExit;
  }
}
