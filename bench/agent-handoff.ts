/**
 * `npm run bench -- agent-handoff [--agents 10] [--partitions 64] [--trials 10] [--ttl 3] [--build LABEL=BIN]… [--windows FILE]`
 *
 * Where a graceful hand-off's time goes (issue 15's "hand-off incl. the new child's start"), and an
 * A/B of builds in one sitting. A diagnosis, not a goal figure (the goal's is `npm run bench --
 * agent`). For each `--build` (default: this tree's `bin/muster.js`) a fleet of `--agents` agents on
 * one etcd runs its own service with `--partitions` partitions and `sleep` children as in the agent
 * bench (`sh -c` appends `<partition> <instance> <epoch ns>` to a file, then `exec sleep`), agents at
 * log level `info` (their JSON lines carry `time`). Trials alternate between the fleets (A B A B …),
 * each from a balanced fleet: SIGTERM of one agent, then, per partition it owned:
 *   sig → `moving` put (a watcher in this process sees the owner record rewritten)
 *       → child stopping (victim's log) → child stopped (group gone)
 *       → owner key deleted (watcher) → acquired (successor's create, watcher)
 *       → child starting (successor's log, after the spawn returned) → started (the child's own stamp)
 * Printed: per build, each step's p50/p99 from the SIGTERM, and the end-to-end figure.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { openServiceView } from '../src/partitions/index.js';
import { openStore } from '../src/store/index.js';
import type { Store } from '../src/store/types.js';
import { startEtcd } from '../src/testing/index.js';
import { num, startsFile, threadCpuNs, until } from './agent.js';
import { fmt, quantile } from './stats.js';

const THIS_BIN = new URL('../../bin/muster.js', import.meta.url).pathname;

interface Agent {
  readonly id: string;
  readonly child: ChildProcess;
  readonly dir: string;
  readonly logFile: string;
  readonly exited: Promise<void>;
}

interface LogLine {
  time: number;
  msg: string;
  partition?: string | null;
}

function readLog(file: string): LogLine[] {
  let text = '';
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return [];
  }
  const out: LogLine[] = [];
  for (const l of text.split('\n')) {
    if (!l.startsWith('{')) continue;
    try {
      out.push(JSON.parse(l) as LogLine);
    } catch {
      // a partial line
    }
  }
  return out;
}

const STEPS = ['moving', 'stopping', 'stopped', 'deleted', 'acquired', 'spawned', 'started'] as const;
type Step = (typeof STEPS)[number];

export async function run(args: string[]): Promise<void> {
  const nAgents = num(args, 'agents', 10);
  const partitions = num(args, 'partitions', 64);
  const trials = num(args, 'trials', 10);
  // The graceful path does not depend on it; a longer TTL keeps an overloaded host from losing sessions.
  const ttl = num(args, 'ttl', 3);
  // `--build LABEL=BIN[=NODE_FLAG,NODE_FLAG…]` (flags such as `--cpu-prof` for a look inside).
  const builds: { label: string; bin: string; flags: string[] }[] = [];
  for (let i = 0; i < args.length; i++) {
    if (args[i] !== '--build') continue;
    const [label, bin, ...rest] = (args[i + 1] ?? '').split('=');
    const flags = rest.join('=');
    if (label && bin) builds.push({ label, bin, flags: flags ? flags.split(',') : [] });
  }
  if (builds.length === 0) builds.push({ label: 'this', bin: THIS_BIN, flags: [] });
  const root = mkdtempSync(join(tmpdir(), 'bench-handoff-'));
  const cluster = await startEtcd({ members: 1 });
  const store: Store = await openStore(cluster.url);
  const startsPath = join(root, 'starts');
  // `--windows FILE`: each SIGTERM's instant on the monotonic clock (µs, as V8's CPU profiles date
  // their samples) and its build, written at the end: a profile of the agents (`--cpu-prof` in a
  // build's flags) can then be cut to the hand-off windows.
  const windowsFile = ((i) => (i >= 0 ? args[i + 1] : undefined))(args.indexOf('--windows'));
  const windows: { label: string; t: number }[] = [];
  let serial = 0;

  interface Fleet {
    label: string;
    bin: string;
    flags: string[];
    service: string;
    agents: Map<string, Agent>;
    view: ReturnType<typeof openServiceView>;
    /** Store events on the owner keys, as this process's watch sees them: partition → [type, ms, moving]. */
    events: { partition: string; type: 'put' | 'delete'; t: number; moving: boolean; create: boolean }[];
    steps: Record<Step, number[]>;
    traces: Record<string, number[]>;
    total: number[];
    /** CPU time (ms) from the SIGTERM until every new child ran, per trial: the other agents, etcd, this process. */
    cpuMs: number[];
    etcdCpuMs: number[];
    benchCpuMs: number[];
    /** Store writes (revisions) under the fleet's keys per hand-off (SIGTERM → every new child ran): all, status records. */
    writes: number[];
    statusWrites: number[];
  }

  const startAgent = (f: Fleet): Agent => {
    const id = `${f.service}-a${serial++}`;
    const dir = join(root, id);
    const file = join(root, `${id}.yaml`);
    writeFileSync(
      file,
      `store: ${cluster.url}
service: ${f.service}
instance: { id: ${id} }
session: { ttl: ${ttl}s }
partitions: { count: ${partitions} }
stateDir: ${dir}
relay: false
log: { level: info }
run:
  command: ["/bin/sh", "-c", "echo \\"$MUSTER_PARTITION $MUSTER_INSTANCE $(date +%s%N)\\" >> ${startsPath}; exec sleep 100000"]
  stop: { grace: 0ms }
  restart: { backoff: { initial: 1ms, max: 1s } }
`,
    );
    const logFile = join(root, `${id}.log`);
    const fd = openSync(logFile, 'a');
    const child = spawn(process.execPath, [...f.flags, f.bin, 'agent', '--config', file], {
      stdio: ['ignore', fd, fd],
    });
    closeSync(fd);
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    const a = { id, child, dir, logFile, exited };
    f.agents.set(id, a);
    return a;
  };

  const rows = async (f: Fleet, a: Agent): Promise<{ partition: string; state: string }[]> => {
    try {
      const run = JSON.parse(readFileSync(join(a.dir, `agent-${f.service}.json`), 'utf8')) as { api: string };
      const token = readFileSync(join(a.dir, `${f.service}.token`), 'utf8').trim();
      const res = await fetch(`${run.api}/v1/partitions`, { headers: { authorization: `Bearer ${token}` } });
      return ((await res.json()) as { partitions: { partition: string; state: string }[] }).partitions;
    } catch {
      return [];
    }
  };
  const balanced = async (f: Fleet): Promise<boolean> => {
    if (f.view.instances.size !== f.agents.size) return false;
    const target = f.view.assignment();
    for (const p of target.partitions) {
      const o = f.view.owners.get(p);
      if (o === undefined || o.moving === true || o.instance !== target.byPartition.get(p)) return false;
    }
    let n = 0;
    for (const a of f.agents.values()) n += (await rows(f, a)).filter((r) => r.state === 'ready').length;
    return n === partitions;
  };

  const fleets: Fleet[] = builds.map((b, i) => ({
    label: b.label,
    bin: b.bin,
    flags: b.flags,
    service: `h${i}`,
    agents: new Map(),
    view: openServiceView(store, `h${i}`),
    events: [],
    steps: Object.fromEntries(STEPS.map((s) => [s, []])) as unknown as Record<Step, number[]>,
    traces: {},
    total: [],
    cpuMs: [],
    etcdCpuMs: [],
    benchCpuMs: [],
    writes: [],
    statusWrites: [],
  }));
  // Every write under the root, with when this process saw it: a hand-off's writes are counted per
  // fleet (its service's keys and its agents' status records) between its SIGTERM and its end.
  const written: { t: number; revision: number; key: string }[] = [];
  const rootWatch = store.watch('/muster/');
  void (async () => {
    for await (const b of rootWatch) {
      if (b.type !== 'events') continue;
      const t = Date.now();
      for (const e of b.events) written.push({ t, revision: e.kv.modRevision, key: e.kv.key });
    }
  })();
  const writesIn = (f: Fleet, from: number, to: number): { all: number; status: number } => {
    const all = new Set<number>();
    const status = new Set<number>();
    for (const w of written) {
      if (w.t < from || w.t > to || !w.key.includes(`/${f.service}/`)) continue;
      all.add(w.revision);
      if (w.key.includes('/status/') || w.key.includes('/agents/')) status.add(w.revision);
    }
    return { all: all.size, status: status.size };
  };
  const watches = fleets.map((f) => {
    const w = store.watch(`/muster/services/${f.service}/owners/`);
    void (async () => {
      for await (const b of w) {
        if (b.type !== 'events') continue;
        const t = Date.now();
        for (const e of b.events) {
          const partition = e.kv.key.slice(e.kv.key.lastIndexOf('/') + 1);
          let moving = false;
          if (e.type === 'put') {
            try {
              moving =
                (JSON.parse(Buffer.from(e.kv.value).toString()) as { moving?: boolean }).moving === true;
            } catch {
              moving = false;
            }
          }
          f.events.push({ partition, type: e.type, t, moving, create: e.kv.version === 1 });
        }
      }
    })();
    return w;
  });
  const starts = startsFile(startsPath);

  console.log(
    `# agent hand-off probe: ${builds.map((b) => `${b.label}=${b.bin}`).join(', ')}; ${nAgents} agents, ${partitions} partitions each, ${trials} trials per build`,
  );
  try {
    // One fleet at a time: twenty agents starting a hundred children at once on two cores lose sessions.
    for (const f of fleets) {
      for (let i = 0; i < nAgents; i++) startAgent(f);
      await until(`${f.label} balanced`, () => balanced(f), 180_000, 200);
    }

    for (let t = 0; t < trials; t++) {
      const order = t % 2 === 0 ? fleets : [...fleets].reverse();
      for (const f of order) {
        await until(`${f.label} balanced`, () => balanced(f), 60_000, 50);
        await sleep(300);
        const victim = [...f.agents.values()][0] as Agent;
        const mine = (await rows(f, victim)).map((r) => r.partition);
        const others = [...f.agents.values()].filter((a) => a !== victim);
        const etcdPid = cluster.members[0]?.pid;
        const cpu0 = others.reduce((n, a) => n + threadCpuNs(a.child.pid), 0);
        const etcd0 = threadCpuNs(etcdPid);
        const bench0 = process.cpuUsage();
        const wall0 = Date.now();
        windows.push({ label: f.label, t: Number(process.hrtime.bigint() / 1000n) });
        victim.child.kill('SIGTERM');
        const prefix = (p: string, inst: string) =>
          starts.read().find((s) => s.partition === p && s.t > wall0 && s.instance !== inst);
        await until('hand-off', () => mine.every((p) => prefix(p, victim.id) !== undefined), 30_000, 2);
        const bench1 = process.cpuUsage(bench0);
        f.cpuMs.push((others.reduce((n, a) => n + threadCpuNs(a.child.pid), 0) - cpu0) / 1e6);
        f.etcdCpuMs.push((threadCpuNs(etcdPid) - etcd0) / 1e6);
        f.benchCpuMs.push((bench1.user + bench1.system) / 1000);
        const w = writesIn(f, wall0, Date.now());
        f.writes.push(w.all);
        f.statusWrites.push(w.status);
        await victim.exited;
        await sleep(200);
        const vlog = readLog(victim.logFile);
        const olog = others.flatMap((a) => readLog(a.logFile));
        for (const p of mine) {
          const ev = f.events.filter((e) => e.partition === p && e.t >= wall0 - 5);
          const pick = (xs: LogLine[], msg: string): number | undefined =>
            xs.find((l) => l.partition === p && l.msg === msg && l.time >= wall0)?.time;
          const s: Record<Step, number | undefined> = {
            moving: ev.find((e) => e.type === 'put' && e.moving)?.t,
            stopping: pick(vlog, 'child stopping'),
            stopped: pick(vlog, 'child stopped'),
            deleted: ev.find((e) => e.type === 'delete')?.t,
            acquired: ev.find((e) => e.type === 'put' && e.create)?.t,
            spawned: pick(olog, 'child starting'),
            started: prefix(p, victim.id)?.t,
          };
          for (const k of STEPS) {
            const v = s[k];
            if (v !== undefined) f.steps[k].push(v - wall0);
          }
          // Optional `trace <step>` lines (temporary instrumentation of a build): the first after the
          // SIGTERM for this partition (or for the whole agent: partition null), victim's first.
          const names = new Set(
            [...vlog, ...olog].filter((l) => l.msg.startsWith('trace ')).map((l) => l.msg),
          );
          for (const name of names) {
            const hit = (l: LogLine): boolean =>
              l.msg === name &&
              l.time >= wall0 &&
              (l.partition === p || l.partition === `${f.service}/${p}` || l.partition === null);
            const v = vlog.find(hit)?.time ?? olog.find(hit)?.time;
            if (v !== undefined) (f.traces[name] ??= []).push(v - wall0);
          }
          if (s.started !== undefined) f.total.push(s.started - wall0);
        }
        f.agents.delete(victim.id);
        startAgent(f);
      }
    }
    for (const f of fleets) {
      console.log(`\n## ${f.label} (${f.bin}), n=${f.total.length}: ms from the SIGTERM, p50 / p90 / p99`);
      const all = (xs: number[]): string => xs.map((x) => fmt(x)).join(' ');
      console.log(
        `  CPU per hand-off (SIGTERM → every new child ran), median: the other agents ${fmt(quantile(f.cpuMs, 0.5))} ms, etcd ${fmt(quantile(f.etcdCpuMs, 0.5))} ms, this bench ${fmt(quantile(f.benchCpuMs, 0.5))} ms`,
      );
      console.log(`    other agents, all: ${all(f.cpuMs)}`);
      console.log(
        `  store writes per hand-off, median: ${fmt(quantile(f.writes, 0.5))} (status records ${fmt(quantile(f.statusWrites, 0.5))}); all: ${all(f.writes)}`,
      );
      for (const k of STEPS) {
        const xs = f.steps[k];
        console.log(
          `  ${k.padEnd(9)} ${fmt(quantile(xs, 0.5))} / ${fmt(quantile(xs, 0.9))} / ${fmt(quantile(xs, 0.99))}  (n=${xs.length})`,
        );
      }
      const traces = Object.entries(f.traces).sort((a, b) => quantile(a[1], 0.5) - quantile(b[1], 0.5));
      for (const [k, xs] of traces) {
        console.log(
          `  ${k.padEnd(24)} ${fmt(quantile(xs, 0.5))} / ${fmt(quantile(xs, 0.9))} / ${fmt(quantile(xs, 0.99))}  (n=${xs.length})`,
        );
      }
    }
    if (windowsFile !== undefined) writeFileSync(windowsFile, JSON.stringify(windows));
  } finally {
    for (const w of watches) w.close();
    rootWatch.close();
    for (const f of fleets) {
      for (const a of f.agents.values()) a.child.kill('SIGTERM');
      await Promise.all([...f.agents.values()].map((a) => a.exited));
      f.view.close();
    }
    await store.close();
    await cluster.close();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  run(process.argv.slice(2)).then(
    () => process.exit(0),
    (err: unknown) => {
      console.error(err);
      process.exit(1);
    },
  );
}
