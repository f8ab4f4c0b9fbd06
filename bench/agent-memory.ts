/**
 * `npm run bench -- agent-memory [--children 100] [--settle 2] [--later 15]`
 *
 * Where the RSS of one `muster agent` goes (issue 15's "RSS ≤ 60 MB with 100 children"; docs/agent.md,
 * "Memory"). One agent on a one-member etcd, children are `sleep` (as in `npm run bench -- agent`),
 * run three times one after another: with the agent's V8 flags, with V8's defaults
 * (`--opt --sparkplug --no-optimize-for-size`, which the agent then leaves alone), and with 10
 * children (the per-child cost). For each: RSS `--settle` seconds after every child runs (when the
 * agent bench reads it) and again `--later` seconds after, split by /proc/<pid>/smaps into the node
 * binary's pages, other files, malloc's heap and other anonymous memory (mostly V8's heap), with V8's
 * spaces and code statistics (from a probe loaded with `--import`), threads and idle CPU. Then the
 * import cost of each package in the agent's load order (RSS and heap after a full GC, in a fresh
 * process with the agent's flags). A diagnosis tool: the goal's figure is the agent bench's.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { startEtcd } from '../src/testing/index.js';
import type { MemoryProbe } from './agent-memory-probe.js';
import { fmt } from './stats.js';

const BIN = fileURLToPath(new URL('../../bin/muster.js', import.meta.url));
const PROBE = new URL('./agent-memory-probe.js', import.meta.url).href;
const IMPORTS = fileURLToPath(new URL('./agent-memory-imports.js', import.meta.url));
const MB = 1024 * 1024;

/** The agent's flags turned back to V8's defaults (the agent skips a flag the operator gave). */
const V8_DEFAULTS = ['--opt', '--sparkplug', '--no-optimize-for-size'];
/** The agent's own flags, for the import-cost process (src/cli/agent-main.ts `AGENT_V8_FLAGS`). */
const AGENT_FLAGS = [
  '--semi-space-growth-factor=1',
  '--no-turbofan',
  '--no-sparkplug',
  '--optimize-for-size',
];

function num(args: string[], name: string, fallback: number): number {
  const i = args.indexOf(`--${name}`);
  const v = i >= 0 ? Number(args[i + 1]) : Number.NaN;
  return Number.isFinite(v) ? v : fallback;
}

/** Resident KiB of `pid` by mapping: the node binary, other files, malloc's [heap], other anonymous. */
function smaps(pid: number): Record<'rss' | 'binary' | 'files' | 'malloc' | 'anon', number> {
  const out = { rss: 0, binary: 0, files: 0, malloc: 0, anon: 0 };
  let kind: keyof typeof out = 'anon';
  for (const line of readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
    const m = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (m) {
      const name = m[1] ?? '';
      kind =
        name === process.execPath || name.endsWith('/node')
          ? 'binary'
          : name.startsWith('/')
            ? 'files'
            : name === '[heap]'
              ? 'malloc'
              : 'anon';
      continue;
    }
    const r = /^Rss:\s+(\d+)/.exec(line);
    if (r) {
      out[kind] += Number(r[1]);
      out.rss += Number(r[1]);
    }
  }
  return out;
}

function cpuTicks(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(f[11]) + Number(f[12]);
}

/** `sleep` processes among the descendants of `pid`. */
function sleepers(pid: number): number {
  const parent = new Map<number, { ppid: number; comm: string }>();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      parent.set(Number(d), { ppid: Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]), comm });
    } catch {
      // gone
    }
  }
  let n = 0;
  for (const [p, info] of parent) {
    if (info.comm !== 'sleep') continue;
    for (let q = info.ppid, hops = 0; q > 1 && hops < 8; q = parent.get(q)?.ppid ?? 0, hops++) {
      if (q === pid) {
        n++;
        break;
      }
    }
    void p;
  }
  return n;
}

interface Variant {
  label: string;
  flags: string[];
  children: number;
}

async function measure(
  root: string,
  storeUrl: string,
  v: Variant,
  settleS: number,
  laterS: number,
  say: (l: string) => void,
): Promise<void> {
  const id = `m${v.children}-${v.flags.length}`;
  const file = join(root, `${id}.yaml`);
  const probeOut = join(root, `${id}.probe.json`);
  writeFileSync(
    file,
    `store: ${storeUrl}
service: mem-${id}
instance: { id: ${id} }
session: { ttl: 3s }
partitions: { count: ${v.children} }
stateDir: ${root}/${id}
relay: false
log: { level: warn }
run:
  command: ["/bin/sh", "-c", "exec sleep 100000"]
  stop: { grace: 0ms }
`,
  );
  const child: ChildProcess = spawn(
    process.execPath,
    [...v.flags, '--import', PROBE, BIN, 'agent', '--config', file],
    { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, MUSTER_MEMORY_PROBE_OUT: probeOut } },
  );
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const pid = child.pid!;
  try {
    const t0 = performance.now();
    while (sleepers(pid) < v.children) {
      if (performance.now() - t0 > 120_000) throw new Error(`${v.label}: children did not start`);
      if (child.exitCode !== null) throw new Error(`${v.label}: the agent exited (${child.exitCode})`);
      await sleep(100);
    }
    const startCpu = cpuTicks(pid) * 10;
    const readyMs = performance.now() - t0;
    const probe = async (): Promise<MemoryProbe> => {
      rmSync(probeOut, { force: true });
      child.kill('SIGUSR2');
      for (let i = 0; i < 100; i++) {
        await sleep(20);
        try {
          return JSON.parse(readFileSync(probeOut, 'utf8')) as MemoryProbe;
        } catch {
          // not written yet
        }
      }
      throw new Error('the probe did not answer');
    };
    const row = async (when: string): Promise<void> => {
      const m = smaps(pid);
      const p = await probe();
      const sp = (name: string): string => {
        const s = p.spaces[`${name}_space`];
        return s === undefined ? '-' : `${fmt(s.used / MB, 1)}/${fmt(s.physical / MB, 1)}`;
      };
      say(
        `  ${when}: RSS ${fmt(m.rss / 1024, 1)} MB = node binary ${fmt(m.binary / 1024, 1)} + other files ${fmt(m.files / 1024, 1)} + malloc [heap] ${fmt(m.malloc / 1024, 1)} + other anon ${fmt(m.anon / 1024, 1)} (V8 heap ${fmt(p.memoryUsage.heapTotal / MB, 1)}, used ${fmt(p.memoryUsage.heapUsed / MB, 1)}; external ${fmt(p.memoryUsage.external / MB, 1)})`,
      );
      say(
        `    V8 spaces used/physical MB: old ${sp('old')}, new ${sp('new')}, code ${sp('code')}, large ${sp('large_object')}; code+metadata ${fmt((p.code.code_and_metadata_size ?? 0) / MB, 1)}, bytecode ${fmt((p.code.bytecode_and_metadata_size ?? 0) / MB, 1)}, script sources ${fmt((p.code.external_script_source_size ?? 0) / MB, 1)}; threads ${p.threads}`,
      );
    };
    say(
      `${v.label} — ${v.children} children running ${fmt(readyMs / 1000, 1)} s after spawn, start-up CPU ${fmt(startCpu / 1000, 2)} s`,
    );
    await sleep(settleS * 1000);
    await row(`+${settleS} s`);
    await sleep(laterS * 1000);
    await row(`+${settleS + laterS} s`);
    const c0 = cpuTicks(pid);
    const w0 = performance.now();
    await sleep(5000);
    const cpu = ((cpuTicks(pid) - c0) / 100 / ((performance.now() - w0) / 1000)) * 100;
    say(`  idle CPU ${fmt(cpu, 3)} % of a core (${fmt(cpu / v.children, 4)} % per partition)`);
  } finally {
    child.kill('SIGTERM');
    await exited;
  }
}

export async function run(args: string[]): Promise<void> {
  const children = num(args, 'children', 100);
  const settle = num(args, 'settle', 2);
  const later = num(args, 'later', 15);
  const say = (l: string): void => void process.stdout.write(`${l}\n`);
  const root = mkdtempSync(join(tmpdir(), 'bench-agent-memory-'));
  const cluster = await startEtcd({ members: 1 });
  try {
    const variants: Variant[] = [
      { label: "the agent's V8 flags", flags: [], children },
      { label: `V8's defaults (${V8_DEFAULTS.join(' ')})`, flags: V8_DEFAULTS, children },
      { label: "the agent's V8 flags, 10 children", flags: [], children: 10 },
    ];
    for (const v of variants) await measure(root, cluster.url, v, settle, later, say);
  } finally {
    await cluster.close();
    rmSync(root, { recursive: true, force: true });
  }
  say('import cost in load order (fresh process, the agent’s flags, after a full GC):');
  const res = spawnSync(process.execPath, ['--expose-gc', ...AGENT_FLAGS, IMPORTS], {
    encoding: 'utf8',
  });
  say(res.stdout + (res.status === 0 ? '' : res.stderr));
}
