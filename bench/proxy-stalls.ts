/**
 * `npm run bench -- proxy-stalls [--rounds 2] [--duration 10s] [--rate 5000]`: what stops a muster
 * proxy worker's event loop at a fixed rate — the diagnosis behind docs/proxy.md "The added p99 at
 * 5k req/s". One `muster proxy` (one worker) in front of an nginx `return 200` backend, h2load at
 * `--rate` (after a 5 s unmeasured warm-up — the JIT's compilations run on V8's helper threads then —
 * and 15 s for the start-up's last collections),
 * the worker carrying bench/loop-probe.ts (its loop's stalls > 4 ms and collections > 1 ms, on
 * CLOCK_MONOTONIC) while `perf sched record -k mono -a` records every context switch and wake-up of
 * the machine on the same clock. For each stall it reports what the worker's main thread was doing
 * most of that time:
 *
 * - running (JavaScript, a collection, or system calls — a backlog being worked off), and whether
 *   the host ran its vCPU meanwhile: `perf record -a -e cpu-clock` alongside (bench/vcpu-gaps.ts)
 *   samples every CPU from a timer, so a stretch without a sample is time the host did not run it;
 * - runnable: woken (or preempted) but not on a CPU — with what ran meanwhile on the CPU it was
 *   queued on (the wake-up's CPU, or where the scheduler moved it: `sched_migrate_task`): the
 *   guest's idle task (the host was not running that vCPU, or was slow to wake it), the worker's own
 *   helper threads, or another thread, by name (e.g. the host's `kdamond.0`);
 * - sleeping: in a system call past the probe's 1 ms timer — its wake-up came late, or the thread was
 *   blocked (a lock, a page fault);
 * - unknown: the trace has nothing on it for that time.
 *
 * It needs `perf` and the right to record the scheduler's tracepoints machine-wide (root, or
 * CAP_PERFMON with a readable tracefs); without them it prints the stalls and collections alone.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { openStore } from '../src/store/index.js';
import { findBinary, freePort, startTempServe } from '../src/testing/index.js';
import { toMillis } from '../src/util/duration.js';
import type { LoopProbe } from './loop-probe.js';
import { BIN, firstLine, h2loadRate, startNginx } from './proxy.js';
import { arg, fmt } from './stats.js';
import { monoToEpochUs, recordVcpuGaps, type VcpuGap } from './vcpu-gaps.js';

const PROBE = pathToFileURL(fileURLToPath(new URL('./loop-probe.js', import.meta.url))).href;

type State = 'running' | 'runnable' | 'sleeping' | 'unknown';

/** The scheduler's view: per CPU who ran from when, and the worker's main thread's states. */
interface SchedTrace {
  /** Per CPU: [ms, tid] from each switch on. */
  readonly cpus: Map<number, [number, number][]>;
  /** tid → [pid, comm]. */
  readonly threads: Map<number, [number, string]>;
  /** The main thread's state from each ms on, in time order, with the CPU it ran or was queued on. */
  readonly main: [number, State, number][];
}

const LINE =
  /^\s*(\d+)\/(\d+)\s+\[(\d+)\]\s+(\d+\.\d+):\s+sched:(sched_switch|sched_waking|sched_migrate_task):\s+(.*)$/;
const SWITCH =
  /prev_comm=(.*?) prev_pid=(\d+) prev_prio=\d+ prev_state=(\S+) ==> next_comm=(.*?) next_pid=(\d+)/;
const WAKING = /comm=(.*?) pid=(\d+) prio=\d+ target_cpu=(\d+)/;
const MIGRATE = /comm=(.*?) pid=(\d+) prio=\d+ orig_cpu=\d+ dest_cpu=(\d+)/;

async function readSched(perf: string, data: string, mainTid: number): Promise<SchedTrace> {
  const trace: SchedTrace = { cpus: new Map(), threads: new Map(), main: [] };
  const child = spawn(perf, ['script', '-i', data, '-F', 'pid,tid,cpu,time,event,trace'], {
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  for await (const line of createInterface({ input: child.stdout })) {
    const m = LINE.exec(line);
    if (m === null) continue;
    const [pid, cpu, ms] = [Number(m[1]), Number(m[3]), Number(m[4]) * 1000];
    if (m[5] === 'sched_migrate_task') {
      // moved while waiting (at its wake-up, or by the load balancer): it is queued there now
      const g = MIGRATE.exec(m[6] as string);
      if (g !== null && Number(g[2]) === mainTid && trace.main.at(-1)?.[1] === 'runnable')
        trace.main.push([ms, 'runnable', Number(g[3])]);
      continue;
    }
    if (m[5] === 'sched_waking') {
      const w = WAKING.exec(m[6] as string);
      const last = trace.main.at(-1)?.[1];
      if (w === null || Number(w[2]) !== mainTid || last !== 'sleeping') continue;
      trace.main.push([ms, 'runnable', Number(w[3])]);
      continue;
    }
    const s = SWITCH.exec(m[6] as string);
    if (s === null) continue;
    const [prev, next] = [Number(s[2]), Number(s[5])];
    // the line's pid/tid is the task switched out; a thread switched in is named now, its pid known
    // once it is switched out in turn
    trace.threads.set(prev, [pid, s[1] as string]);
    if (!trace.threads.has(next)) trace.threads.set(next, [0, s[4] as string]);
    let runs = trace.cpus.get(cpu);
    if (runs === undefined) trace.cpus.set(cpu, (runs = []));
    runs.push([ms, next]);
    if (prev === mainTid)
      trace.main.push([ms, (s[3] as string).startsWith('R') ? 'runnable' : 'sleeping', cpu]);
    if (next === mainTid) trace.main.push([ms, 'running', cpu]);
  }
  return trace;
}

/** Milliseconds per key of the step function `steps` (value from each time on) within [a, b]. */
function within<K>(steps: readonly [number, K][], a: number, b: number): Map<K, number> {
  const out = new Map<K, number>();
  let current: K | undefined;
  let from = a;
  for (const [t, k] of steps) {
    if (t <= a) {
      current = k;
      continue;
    }
    if (t >= b) break;
    if (current !== undefined) out.set(current, (out.get(current) ?? 0) + t - from);
    from = t;
    current = k;
  }
  if (current !== undefined) out.set(current, (out.get(current) ?? 0) + b - from);
  return out;
}

function largest<K>(m: Map<K, number>): K | undefined {
  let best: K | undefined;
  let n = -1;
  for (const [k, v] of m) if (v > n) [best, n] = [k, v];
  return best;
}

export async function run(args: string[]): Promise<void> {
  const seconds = Math.max(1, Math.round(toMillis(arg(args, '--duration') ?? '10s') / 1000));
  const rounds = Number(arg(args, '--rounds') ?? 2);
  const rate = Number(arg(args, '--rate') ?? 5000);
  const h2load = findBinary('h2load');
  if (h2load === undefined) throw new Error('h2load is not on PATH (apt-get install nghttp2-client)');
  const perf = findBinary('perf');
  const dir = mkdtempSync(join(tmpdir(), 'muster-bench-stalls-'));
  const children: ChildProcess[] = [];
  const serve = await startTempServe();
  const store = await openStore(serve.url);
  let perfChild: ChildProcess | undefined;
  let gapsRecording: { stop(): Promise<VcpuGap[]> } | undefined;
  const stopSched = async (): Promise<void> => {
    if (perfChild === undefined || perfChild.exitCode !== null || perfChild.signalCode !== null) return;
    perfChild.kill('SIGINT');
    await once(perfChild, 'exit');
  };
  // the vCPU gaps, or none when perf recorded nothing (not permitted): never a reason to fail
  const stopGaps = async (): Promise<VcpuGap[]> => {
    try {
      return (await gapsRecording?.stop()) ?? [];
    } catch {
      return [];
    }
  };
  try {
    const backend = await freePort();
    children.push(
      await startNginx(
        dir,
        'backend',
        `  server { listen 127.0.0.1:${backend}; location / { return 200 "a"; } }`,
      ),
    );
    await store.put('/muster/services/stalls/spec', JSON.stringify({ partitions: 1 }));
    await store.put(
      '/muster/services/stalls/owners/0',
      JSON.stringify({ instance: 'a', since: '', address: `127.0.0.1:${backend}` }),
    );
    const config = join(dir, 'proxy.json');
    const probes = join(dir, 'probes');
    mkdirSync(probes);
    writeFileSync(
      config,
      JSON.stringify({
        service: 'stalls',
        listen: '127.0.0.1:0',
        key: 'header:x-key',
        workers: 1,
        admin: false,
      }),
    );
    const m = spawn(
      process.execPath,
      ['--import', PROBE, BIN, 'proxy', '--config', config, '--store', serve.url],
      {
        stdio: ['ignore', 'pipe', 'inherit'],
        env: { ...process.env, MUSTER_LOG_LEVEL: 'warn', MUSTER_LOOP_PROBE_DIR: probes },
      },
    );
    children.push(m);
    const url = `http://${(JSON.parse(await firstLine(m)) as { listen: string[] }).listen[0] as string}/`;
    console.log(
      `proxy stalls: one muster worker, h2load ${rate} req/s, ${rounds} × ${seconds} s after a 5 s warm-up and 15 s to settle; ` +
        (perf === undefined
          ? 'perf not on PATH: the scheduler view is skipped'
          : 'perf sched record -k mono -a'),
    );
    await h2loadRate(h2load, url, rate, 5, 50, join(dir, 'warm.log'));
    // and the start-up's last work: V8's memory reducer collects in an idle process some 15 s after start
    await new Promise((r) => setTimeout(r, 15_000));
    const data = join(dir, 'sched.data');
    if (perf !== undefined) {
      perfChild = spawn(perf, ['sched', 'record', '-k', 'mono', '-a', '-o', data], { stdio: 'ignore' });
      gapsRecording = recordVcpuGaps(perf, join(dir, 'cpu-clock.data'));
      await new Promise((r) => setTimeout(r, 1000));
      if (perfChild.exitCode !== null || perfChild.signalCode !== null) {
        console.log(
          `  perf sched record exited (${perfChild.exitCode ?? perfChild.signalCode}; it needs root or CAP_PERFMON): the scheduler view is skipped`,
        );
        perfChild = undefined;
        await stopGaps();
        gapsRecording = undefined;
      }
    }
    // the rounds' own time (h2load sending), not the bench's work between them
    const windows: [number, number][] = [];
    const mono = (): number => Number(process.hrtime.bigint()) / 1e6;
    for (let round = 1; round <= rounds; round++) {
      // h2load sends for 1 + `seconds` s and times the last `seconds` (its first second is unmeasured)
      const start = mono();
      windows.push([start + 1000, start + (1 + seconds) * 1000]);
      const r = await h2loadRate(h2load, url, rate, seconds, 50, join(dir, 'h2load.log'));
      console.log(
        `  round ${round}: p50 ${fmt(r.p50, 3)} ms, p99 ${fmt(r.p99, 3)} ms, p99.9 ${fmt(r.p999, 3)} ms, > 10 ms ${r.over}, errors ${r.errors}`,
      );
    }
    await stopSched();
    // stretches in which a vCPU had no cpu-clock sample at all: the host was not running it
    const offsetUs = monoToEpochUs();
    const vcpuGaps = (await stopGaps()).map((g): [number, number, number] => [
      g.cpu,
      (g.start - offsetUs) / 1000,
      (g.end - offsetUs) / 1000,
    ]);
    m.kill('SIGTERM');
    await once(m, 'exit');
    children.pop();

    const recorded = readdirSync(probes).map(
      (f) => JSON.parse(readFileSync(join(probes, f), 'utf8')) as LoopProbe,
    );
    const worker = recorded.find((p) => p.argv.some((a) => a.includes('worker')));
    if (worker === undefined) throw new Error('the worker wrote no probe record');
    const inRound = (a: number, b: number): boolean => windows.some(([x, y]) => a >= x && b <= y);
    const stalls = worker.stalls.filter(([s, g]) => inRound(s, s + g));
    const gcs = worker.gcs.filter(([s, d]) => inRound(s, s + d));
    const total = stalls.reduce((n, [, g]) => n + g, 0);
    console.log(
      `  the worker's event loop: ${stalls.length} stalls > 4 ms (${fmt(total, 0)} ms in all, longest ${fmt(
        Math.max(0, ...stalls.map(([, g]) => g)),
        1,
      )} ms); collections > 1 ms: ${gcs.length} (longest ${fmt(Math.max(0, ...gcs.map(([, d]) => d)), 1)} ms)`,
    );
    if (perfChild === undefined || !existsSync(data)) return;

    const trace = await readSched(perf as string, data, worker.pid);
    const roles = new Map<number, string>([
      [m.pid ?? -1, "muster's master"],
      [process.pid, 'this bench (and the store it serves)'],
    ]);
    const named = (tid: number): string => {
      const [pid, comm] = trace.threads.get(tid) ?? [0, String(tid)];
      const role = roles.get(pid);
      if (role !== undefined) return role;
      let process = comm;
      try {
        process = readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
      } catch {
        // gone (h2load) or not ours to read: the thread's name says enough
      }
      return process === comm ? comm : `${process} (thread ${comm})`;
    };
    const what = (tid: number): string =>
      tid === 0
        ? 'the idle task (that vCPU not run by the host, or being woken)'
        : trace.threads.get(tid)?.[0] === worker.pid
          ? "the worker's own helper threads (V8's compiler and collector)"
          : named(tid);
    const count = new Map<State, { n: number; ms: number }>();
    let withGc = 0;
    let hostFroze = 0;
    // a wait for a CPU, by what ran on the CPU the main thread was queued on meanwhile
    const waits = new Map<string, { n: number; ms: number }>();
    const states = trace.main.map(([t, state]): [number, State] => [t, state]);
    for (const [s, g] of stalls) {
      const state = largest(within(states, s, s + g)) ?? 'unknown';
      const c = count.get(state) ?? { n: 0, ms: 0 };
      count.set(state, { n: c.n + 1, ms: c.ms + g });
      if (state === 'running') {
        if (gcs.some(([t, d]) => t < s + g && t + d > s)) withGc++;
        // on the CPU it was running on: did that vCPU run at all?
        const cpu = trace.main.findLast(([t, st]) => st === 'running' && t < s + g)?.[2];
        const frozen = vcpuGaps
          .filter(([c]) => c === cpu)
          .reduce((n, [, a, b]) => n + Math.max(0, Math.min(b, s + g) - Math.max(a, s)), 0);
        if (frozen >= g / 2) hostFroze++;
      }
      if (state !== 'runnable') continue;
      // the stall's longest runnable stretch, and who had the CPU the thread was queued on
      let longest: [number, number, number] | undefined;
      trace.main.forEach(([t, st, cpu], i) => {
        const [a, b] = [Math.max(t, s), Math.min(trace.main[i + 1]?.[0] ?? Infinity, s + g)];
        if (st === 'runnable' && b > a && (longest === undefined || b - a > longest[1] - longest[0]))
          longest = [a, b, cpu];
      });
      if (longest === undefined) continue;
      const [a, b, cpu] = longest;
      const by = new Map<string, number>();
      for (const [tid, ms] of within(trace.cpus.get(cpu) ?? [], a, b))
        if (tid !== worker.pid) by.set(what(tid), (by.get(what(tid)) ?? 0) + ms);
      const who = largest(by) ?? '?';
      const w = waits.get(who) ?? { n: 0, ms: 0 };
      waits.set(who, { n: w.n + 1, ms: w.ms + b - a });
    }
    const line = (state: State): string => {
      const c = count.get(state) ?? { n: 0, ms: 0 };
      return `${c.n} (${fmt(c.ms, 0)} ms)`;
    };
    console.log(`  the main thread during the stalls, by what it did most of the time:`);
    console.log(
      `    running: ${line('running')}; with a collection > 1 ms ${withGc}; on a vCPU the host did not run (no cpu-clock sample) for half the stall or more ${hostFroze}`,
    );
    console.log(
      `    runnable (woken or preempted, not on a CPU): ${line('runnable')}; the CPU it was queued on ran meanwhile:`,
    );
    for (const [who, w] of [...waits].sort((x, y) => y[1].n - x[1].n))
      console.log(`      ${who}: ${w.n} (${fmt(w.ms, 0)} ms of waiting)`);
    console.log(
      `    sleeping (in a call past its 1 ms timer: the wake-up came late, or it was blocked): ${line('sleeping')}`,
    );
    if (count.has('unknown')) console.log(`    not in the trace: ${line('unknown')}`);
  } finally {
    await stopSched();
    await stopGaps();
    for (const c of children.reverse()) {
      c.kill('SIGTERM');
      if (c.exitCode === null && c.signalCode === null) await once(c, 'exit');
    }
    await store.close();
    await serve.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
