/**
 * `npm run bench -- serve [--ops N] [--keys K] [--warmup W] [--etcd PATH] [--h2load PATH]`: `muster serve` side by side with a
 * local single-member etcd, through the same client (`etcd3`), in one run, as ratios.
 *
 * Figures (each measured in alternating blocks so machine noise hits both servers alike):
 * sequential put, txn (compare + put) and linearizable get latency; throughput of 64 concurrent
 * puts (group commit), once through the etcd3 client and once sent by h2load (whose client is cheap
 * enough that the servers, not the client, are the limit); put → watch event delay. Then the start-up time of `muster serve` on a data
 * directory holding K keys (default 100,000): in-process `startServer` until it listens, and the
 * whole `muster serve` process until it prints its address. Both servers run as processes of their
 * own; the client is this process. Under each latency and throughput figure, the CPU time each
 * server process used per request (user + system, all threads, from `/proc/<pid>/stat`; Linux only),
 * which a busy machine distorts less than wall time.
 *
 * `--warmup W` (default 0, the figures recorded before it existed) first sends W puts, txns and gets,
 * W puts 64 in flight and W/4 watched puts to each server, unmeasured: the Node server starts with its code interpreted and reaches
 * optimised code only after some thousand calls, while etcd is compiled ahead of time, so without a
 * warm-up the first figures (sequential put, then txn) include muster serve's JIT warm-up.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Etcd3 } from 'etcd3';
import { DurableStore } from '../src/server/durable-store.js';
import { startServer } from '../src/server/index.js';
import { findBinary } from '../src/testing/index.js';
import { arg, fmt, latencySummary, median, quantile, timed } from './stats.js';

interface Target {
  readonly name: string;
  readonly client: Etcd3;
  /** host:port of the server's client endpoint. */
  readonly address: string;
  /** The server's process id, for its CPU time. */
  readonly pid: number | undefined;
}

/** CPU time (user + system, all threads) a process has used, in µs; NaN where /proc is missing. */
export function cpuMicros(pid: number | undefined): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // utime and stime are fields 14 and 15 of stat(5), in clock ticks (100 per second on Linux).
    return (Number(fields[11]) + Number(fields[12])) * 10_000;
  } catch {
    return Number.NaN;
  }
}

/** Latencies of each target, and the server CPU time each used per request (µs). */
interface SideBySide {
  readonly ms: [number[], number[]];
  readonly cpuPerOp: [number, number];
}

/** Runs `fn` on both targets in alternating blocks; returns the latencies of each. */
async function sideBySide(
  targets: readonly [Target, Target],
  n: number,
  fn: (client: Etcd3, i: number) => Promise<unknown>,
  block = 100,
): Promise<SideBySide> {
  const out: [number[], number[]] = [[], []];
  const cpu = [0, 0];
  for (let start = 0; start < n; start += block) {
    for (const [t, target] of targets.entries()) {
      const c0 = cpuMicros(target.pid);
      for (let i = start; i < Math.min(n, start + block); i++)
        out[t]?.push(await timed(() => fn(target.client, i)));
      cpu[t] = (cpu[t] as number) + cpuMicros(target.pid) - c0;
    }
  }
  return { ms: out, cpuPerOp: [(cpu[0] as number) / n, (cpu[1] as number) / n] };
}

function cpuLine(targets: readonly [Target, Target], cpuPerOp: [number, number]): string {
  const [a, b] = cpuPerOp;
  return `  server CPU per request: ${targets[0].name} ${Math.round(a)} µs, ${targets[1].name} ${Math.round(b)} µs`;
}

function report(what: string, targets: readonly [Target, Target], r: SideBySide): void {
  const [a, b] = r.ms;
  console.log(`${what}`);
  console.log(`  ${targets[0].name.padEnd(12)} ${latencySummary(a)}`);
  console.log(`  ${targets[1].name.padEnd(12)} ${latencySummary(b)}`);
  console.log(
    `  ratio at p50 (etcd / muster serve, >1 means muster serve is faster): ×${fmt(median(b) / median(a))}`,
  );
  if (Number.isFinite(r.cpuPerOp[0])) console.log(cpuLine(targets, r.cpuPerOp));
}

/** Puts per second with `inFlight` etcd3 calls at a time; `clientBusy` is this process's CPU share. */
async function concurrentPuts(
  client: Etcd3,
  total: number,
  inFlight: number,
  clientBusy: number[] = [],
): Promise<number> {
  let next = 0;
  const t0 = performance.now();
  const cpu0 = process.cpuUsage();
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (next < total) {
        const i = next++;
        await client
          .put(`/bench/c/${i % 1000}`)
          .value('x'.repeat(64))
          .exec();
      }
    }),
  );
  const ms = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  clientBusy.push((cpu.user + cpu.system) / 1000 / ms);
  return (total / ms) * 1000;
}

/** Appends `n` as a protobuf varint. */
function varint(out: number[], n: number): void {
  while (n > 0x7f) {
    out.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  out.push(n);
}

/** A gRPC message (flag, length, protobuf) holding `PutRequest { key, value }`, etcd's rpc.proto fields 1 and 2. */
function putRequestMessage(key: string, value: string): Buffer {
  const pb: number[] = [];
  for (const [field, text] of [
    [1, key],
    [2, value],
  ] as const) {
    const bytes = Buffer.from(text);
    pb.push((field << 3) | 2);
    varint(pb, bytes.length);
    pb.push(...bytes);
  }
  const msg = Buffer.alloc(5 + pb.length);
  msg.writeUInt32BE(pb.length, 1);
  msg.set(pb, 5);
  return msg;
}

/**
 * Puts per second with `inFlight` streams at a time on one HTTP/2 connection, sent by h2load
 * (nghttp2's load generator, in C): a client that costs a few µs per call, so the server is what is
 * measured (the etcd3 client above spends 100-200 µs of CPU per put and saturates a core first).
 * h2load sees only HTTP statuses, and gRPC reports errors in trailers under status 200, so the
 * store's revision is read before and after: every put adds exactly one, or the run is refused.
 */
async function h2loadPuts(
  bin: string,
  body: string,
  target: Target,
  total: number,
  inFlight: number,
): Promise<number> {
  const revision = async (): Promise<number> =>
    Number((await target.client.get('/bench/h2load').exec()).header.revision);
  const before = await revision();
  const out = await new Promise<string>((resolve, reject) => {
    const child = spawn(bin, [
      '-n',
      String(total),
      '-c',
      '1',
      '-m',
      String(inFlight),
      '-d',
      body,
      '-H',
      'content-type: application/grpc',
      '-H',
      'te: trailers',
      `http://${target.address}/etcdserverpb.KV/Put`,
    ]);
    let text = '';
    child.stdout.on('data', (d: Buffer) => (text += d.toString()));
    child.on('error', reject);
    child.on('exit', (code) =>
      code === 0 ? resolve(text) : reject(new Error(`h2load exited with ${code}: ${text}`)),
    );
  });
  const applied = (await revision()) - before;
  const rate = /finished in [^,]+, ([\d.]+) req\/s/.exec(out);
  if (applied !== total || rate === null) {
    throw new Error(`h2load against ${target.name}: ${applied} of ${total} puts applied\n${out}`);
  }
  return Number(rate[1]);
}

async function watchDelay(client: Etcd3, key: string, n: number): Promise<number[]> {
  const watcher = await client.watch().key(key).create();
  let waiting: (() => void) | undefined;
  watcher.on('put', () => waiting?.());
  const out: number[] = [];
  try {
    for (let i = 0; i < n; i++) {
      const seen = new Promise<void>((resolve) => (waiting = resolve));
      const t0 = performance.now();
      await client.put(key).value(String(i)).exec();
      await seen;
      out.push(performance.now() - t0);
    }
  } finally {
    await watcher.cancel();
  }
  return out;
}

/** Starts a throwaway single-member etcd on free loopback ports. */
async function startEtcd(bin: string, dir: string): Promise<{ child: ChildProcess; endpoint: string }> {
  const port = 20000 + Math.floor(Math.random() * 20000);
  const endpoint = `127.0.0.1:${port}`;
  const child = spawn(
    bin,
    [
      '--data-dir',
      join(dir, 'etcd'),
      '--listen-client-urls',
      `http://${endpoint}`,
      '--advertise-client-urls',
      `http://${endpoint}`,
      '--listen-peer-urls',
      `http://127.0.0.1:${port + 1}`,
      '--initial-advertise-peer-urls',
      `http://127.0.0.1:${port + 1}`,
      '--initial-cluster',
      `default=http://127.0.0.1:${port + 1}`,
    ],
    { stdio: 'ignore' },
  );
  const client = new Etcd3({ hosts: endpoint });
  try {
    for (let i = 0; ; i++) {
      try {
        await client.get('/ready').string();
        return { child, endpoint };
      } catch (err) {
        if (i > 100) throw err;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  } finally {
    client.close();
  }
}

/** Fills a data directory with `keys` keys (then closes it, which writes a snapshot). */
async function fill(dataDir: string, keys: number): Promise<void> {
  const d = await DurableStore.open({ dataDir, snapshotRecords: Number.MAX_SAFE_INTEGER });
  const value = new Uint8Array(64);
  const batch = 100;
  for (let i = 0; i < keys; i += batch) {
    await Promise.all(
      Array.from({ length: Math.min(batch, keys - i) }, (_, j) =>
        d.store.put(`/muster/services/s${(i + j) % 100}/instances/${i + j}`, value),
      ),
    );
  }
  await d.close();
}

async function startupInProcess(dataDir: string): Promise<number> {
  const t0 = performance.now();
  const s = await startServer({ dataDir, listen: '127.0.0.1:0' });
  const ms = performance.now() - t0;
  await s.close();
  return ms;
}

/** Runs `muster serve` as its own process (as etcd runs in its own); resolves once it listens. */
export async function spawnServe(
  dataDir: string,
): Promise<{ child: ChildProcess; address: string; ms: number }> {
  const bin = new URL('../../bin/muster.js', import.meta.url).pathname;
  const t0 = performance.now();
  const child = spawn(process.execPath, [
    bin,
    'serve',
    '--data-dir',
    dataDir,
    '--listen',
    '127.0.0.1:0',
    '--log-level',
    'warn',
  ]);
  const address = await new Promise<string>((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /listening on etcd:\/\/([\d.]+:\d+)/.exec(out);
      if (m !== null) resolve(m[1] as string);
    });
    child.on('exit', (code) => reject(new Error(`muster serve exited with ${code}`)));
  });
  return { child, address, ms: performance.now() - t0 };
}

/** SIGTERM, then waits for the exit. */
export async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await exited;
}

async function startupProcess(dataDir: string): Promise<number> {
  const { child, ms } = await spawnServe(dataDir);
  await stop(child);
  return ms;
}

export async function run(args: string[]): Promise<void> {
  const ops = Number(arg(args, '--ops')) || 1000;
  const h2load = findBinary(arg(args, '--h2load') ?? 'h2load');
  const keys = Number(arg(args, '--keys')) || 100_000;
  const warmup = Number(arg(args, '--warmup')) || 0;
  const etcdBin = findBinary(arg(args, '--etcd') ?? 'etcd');
  if (etcdBin === undefined) throw new Error('etcd is not on PATH (apt-get install etcd-server)');
  const dir = mkdtempSync(join(tmpdir(), 'muster-bench-serve-'));
  const server = await spawnServe(join(dir, 'serve'));
  const etcd = await startEtcd(etcdBin, dir);
  const targets: [Target, Target] = [
    {
      name: 'muster serve',
      client: new Etcd3({ hosts: server.address }),
      address: server.address,
      pid: server.child.pid,
    },
    {
      name: 'etcd',
      client: new Etcd3({ hosts: etcd.endpoint }),
      address: etcd.endpoint,
      pid: etcd.child.pid,
    },
  ];
  const value = 'x'.repeat(64);
  try {
    console.log(`muster serve vs etcd (single member), etcd3 client, ${ops} ops per figure`);
    for (const t of targets) await t.client.put('/bench/warm').value(value);
    if (warmup > 0) {
      for (const t of targets) {
        for (let i = 0; i < warmup; i++) {
          const c = t.client;
          await c
            .put(`/bench/warm/${i % 100}`)
            .value(value)
            .exec();
          await c
            .if(`/bench/warm/${i % 100}`, 'Version', '>', -1)
            .then(c.put(`/bench/warm/${i % 100}`).value(value))
            .commit();
          await c.get(`/bench/warm/${i % 100}`).string();
        }
        await concurrentPuts(t.client, warmup, 64);
        await watchDelay(t.client, '/bench/warm/w', Math.ceil(warmup / 4));
      }
      console.log(
        `(after ${warmup} unmeasured puts, txns, gets and puts 64 in flight, and ${Math.ceil(warmup / 4)} watched puts, to each server)`,
      );
    }
    report(
      'sequential put',
      targets,
      await sideBySide(targets, ops, (c, i) =>
        c
          .put(`/bench/p/${i % 100}`)
          .value(value)
          .exec(),
      ),
    );
    report(
      'txn (compare version + put)',
      targets,
      await sideBySide(targets, ops, (c, i) =>
        c
          .if(`/bench/t/${i % 100}`, 'Version', '>', -1)
          .then(c.put(`/bench/t/${i % 100}`).value(value))
          .commit(),
      ),
    );
    report(
      'linearizable get',
      targets,
      await sideBySide(targets, ops, (c, i) => c.get(`/bench/p/${i % 100}`).string()),
    );
    const rates: [number[], number[]] = [[], []];
    const rateCpu = [0, 0];
    const busy: number[] = [];
    for (let r = 0; r < 3; r++) {
      for (const [t, target] of targets.entries()) {
        const c0 = cpuMicros(target.pid);
        rates[t]?.push(await concurrentPuts(target.client, ops * 2, 64, busy));
        rateCpu[t] = (rateCpu[t] as number) + (cpuMicros(target.pid) - c0) / (ops * 2 * 3);
      }
    }
    const [ra, rb] = rates.map((x) => median(x)) as [number, number];
    console.log('puts, 64 in flight (group commit), etcd3 client');
    console.log(
      `  muster serve ${Math.round(ra).toLocaleString('en-US')}/s, etcd ${Math.round(rb).toLocaleString('en-US')}/s, ratio ×${fmt(ra / rb)}`,
    );
    if (Number.isFinite(rateCpu[0])) console.log(cpuLine(targets, rateCpu as [number, number]));
    console.log(
      `  client CPU: ${Math.round(median(busy) * 100)} % of a core (median of the runs; near 100 %: the client is the limit)`,
    );
    if (h2load === undefined) {
      console.log(
        'puts, 64 in flight, h2load: skipped (h2load is not on PATH: apt-get install nghttp2-client)',
      );
    } else {
      const body = join(dir, 'put.grpc');
      writeFileSync(body, putRequestMessage('/bench/h2load', 'x'.repeat(64)));
      const n = ops * 20;
      for (const target of targets) await h2loadPuts(h2load, body, target, n / 4, 64);
      const h2: [number[], number[]] = [[], []];
      const h2Cpu = [0, 0];
      for (let r = 0; r < 3; r++) {
        for (const [t, target] of targets.entries()) {
          const c0 = cpuMicros(target.pid);
          h2[t]?.push(await h2loadPuts(h2load, body, target, n, 64));
          h2Cpu[t] = (h2Cpu[t] as number) + (cpuMicros(target.pid) - c0) / (n * 3);
        }
      }
      const [ha, hb] = h2.map((x) => median(x)) as [number, number];
      console.log(
        `puts, 64 in flight (group commit), h2load, ${n.toLocaleString('en-US')} puts a run, 3 runs each`,
      );
      console.log(
        `  muster serve ${h2[0].map((x) => Math.round(x).toLocaleString('en-US')).join(' · ')}/s, etcd ${h2[1].map((x) => Math.round(x).toLocaleString('en-US')).join(' · ')}/s`,
      );
      console.log(
        `  median muster serve ${Math.round(ha).toLocaleString('en-US')}/s, etcd ${Math.round(hb).toLocaleString('en-US')}/s, ratio ×${fmt(ha / hb)}`,
      );
      if (Number.isFinite(h2Cpu[0])) console.log(cpuLine(targets, h2Cpu as [number, number]));
    }
    const delays: [number[], number[]] = [[], []];
    const delayCpu = [0, 0];
    for (let r = 0; r < 4; r++) {
      for (const [t, target] of targets.entries()) {
        const c0 = cpuMicros(target.pid);
        delays[t]?.push(...(await watchDelay(target.client, '/bench/w', ops / 4)));
        delayCpu[t] = (delayCpu[t] as number) + (cpuMicros(target.pid) - c0) / ops;
      }
    }
    report('put → watch event', targets, { ms: delays, cpuPerOp: delayCpu as [number, number] });
  } finally {
    for (const t of targets) t.client.close();
    await stop(server.child);
    await stop(etcd.child);
  }

  const startDir = join(dir, 'startup');
  console.log(`start-up with ${keys.toLocaleString('en-US')} keys (filling…)`);
  await fill(startDir, keys);
  const inProcess: number[] = [];
  const processes: number[] = [];
  for (let r = 0; r < 5; r++) {
    inProcess.push(await startupInProcess(startDir));
    processes.push(await startupProcess(startDir));
  }
  console.log(
    `  startServer() until listening: p50 ${fmt(median(inProcess))} ms, max ${fmt(quantile(inProcess, 1))} ms (goal < 500 ms)`,
  );
  console.log(`  \`muster serve\` process until it prints its address: p50 ${fmt(median(processes))} ms`);
  rmSync(dir, { recursive: true, force: true });
}
