/**
 * `npm run bench -- postgres [--ops N] [--inflight 64] [--warmup W] [--lease-rounds R]
 *  [--workers 150] [--switches S] [--engines postgres,etcd,serve] [--url postgres://…]`
 *
 * The PostgreSQL engine side by side with etcd (one member) and `muster serve`, in one run, through
 * the same Store port (`openStore`); each server runs in processes of its own, durably (PostgreSQL
 * with `fsync=on`, as etcd and muster serve fsync every commit), and the client is this process.
 * - sequential put, txn (compare + put) and linearizable get: p50/p99, measured in alternating blocks
 *   of 100 calls so machine noise hits every engine alike, with the ratio to etcd at p50 and p99;
 * - puts/s with `--inflight` (64) puts in flight: median of 3 alternating rounds;
 * - put → watch event, the watch held by a second client of the same server;
 * - lease (TTL 2 s, never kept alive) → its key's deletion seen by a watcher, all engines at once;
 * - under each figure, the CPU time all of each server's processes used per request (etcd, muster
 *   serve, the postmaster and its backends; from `/proc`, Linux only);
 * - postgres only: the cost of the gap-free revision against a SEQUENCE (see `baseline.ts`);
 * - config propagation to `--workers` (150) processes through one per-host relay, per engine
 *   (`bench/config.ts`'s fleet; `--workers 0` skips it).
 * The issue's goal: postgres within 2× of etcd's put and put → watch latency.
 * `--warmup W` (default 500) first sends W unmeasured calls of each kind to every engine, so the
 * Node server (muster serve) and this client run optimised code before anything is measured.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openPostgresStore, sequenceBaseline } from '../src/store/postgres/index.js';
import { openStore } from '../src/store/index.js';
import type { Store } from '../src/store/types.js';
import { startEtcd, startPostgres } from '../src/testing/index.js';
import { runOne } from './config.js';
import { watchDelay } from './etcd.js';
import { cpuMicros, spawnServe, stop } from './serve.js';
import { arg, fmt, latencySummary, median, quantile, rate, timed } from './stats.js';

/** One engine under test: a writer and a watcher client on one server. */
interface Engine {
  readonly name: string;
  readonly url: string;
  readonly writer: Store;
  readonly watcher: Store;
  /** The server's processes now (PostgreSQL: the postmaster and its backends), for CPU time. */
  pids(): number[];
  close(): Promise<void>;
}

const VALUE = 'x'.repeat(64);

/** `pid` and its children (`/proc/<child>/stat` field 4 is the parent's pid). */
function withChildren(pid: number | undefined): number[] {
  if (pid === undefined) return [];
  const out = [pid];
  for (const p of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      const stat = readFileSync(`/proc/${p}/stat`, 'utf8');
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === pid) out.push(Number(p));
    } catch {
      // gone
    }
  }
  return out;
}

/** µs of CPU all of `e`'s server processes used so far; NaN when they are not known (`--url`). */
function serverCpu(e: Engine): number {
  const pids = e.pids();
  return pids.length === 0 ? Number.NaN : pids.reduce((sum, pid) => sum + cpuMicros(pid), 0);
}

async function startEngine(kind: string, args: string[], poolMax: number, dir: string): Promise<Engine> {
  const clients = async (
    name: string,
    url: string,
    open: (u: string) => Promise<Store>,
    pids: () => number[],
    close: () => Promise<void>,
  ): Promise<Engine> => {
    const writer = await open(url);
    const watcher = await open(url);
    return {
      name,
      url,
      writer,
      watcher,
      pids,
      close: async () => {
        await writer.close();
        await watcher.close();
        await close();
      },
    };
  };
  if (kind === 'etcd') {
    const etcd = await startEtcd({ members: 1 });
    const pid = (): number[] => (etcd.members[0]?.pid === undefined ? [] : [etcd.members[0].pid]);
    return clients(
      'etcd',
      etcd.url,
      (u) => openStore(u),
      pid,
      () => etcd.close(),
    );
  }
  if (kind === 'serve') {
    const serve = await spawnServe(join(dir, 'serve'));
    const pid = (): number[] => (serve.child.pid === undefined ? [] : [serve.child.pid]);
    return clients(
      'muster serve',
      `etcd://${serve.address}`,
      (u) => openStore(u),
      pid,
      () => stop(serve.child),
    );
  }
  if (kind !== 'postgres') throw new Error(`unknown engine ${kind} (postgres, etcd, serve)`);
  const open = (u: string): Promise<Store> => openPostgresStore(u, { poolMax });
  const given = arg(args, '--url');
  if (given !== undefined)
    return clients(
      'postgres',
      given,
      open,
      () => [],
      async () => undefined,
    );
  const pg = await startPostgres({ durable: true });
  return clients(
    'postgres',
    await pg.createDatabase(),
    open,
    () => withChildren(pg.pid),
    () => pg.close(),
  );
}

/** Runs `fn` on every engine in alternating blocks of `block` calls; latencies and server µs per call. */
async function interleaved(
  engines: readonly Engine[],
  n: number,
  fn: (store: Store, i: number) => Promise<unknown>,
  block = 100,
): Promise<{ ms: number[][]; cpu: number[] }> {
  const ms = engines.map((): number[] => []);
  const cpu = engines.map(() => 0);
  for (let start = 0; start < n; start += block) {
    for (const [k, e] of engines.entries()) {
      const c0 = serverCpu(e);
      for (let i = start; i < Math.min(n, start + block); i++)
        ms[k]?.push(await timed(() => fn(e.writer, i)));
      cpu[k] = (cpu[k] as number) + (serverCpu(e) - c0) / n;
    }
  }
  return { ms, cpu };
}

function cpuLine(engines: readonly Engine[], cpu: readonly number[]): void {
  if (!cpu.some(Number.isFinite)) return;
  const cells = engines.map((e, k) =>
    Number.isFinite(cpu[k]) ? `${e.name} ${Math.round(cpu[k] as number)} µs` : `${e.name} n/a`,
  );
  console.log(`  server CPU per request: ${cells.join(', ')}`);
}

function report(what: string, engines: readonly Engine[], r: { ms: number[][]; cpu: number[] }): void {
  console.log(what);
  const etcd = engines.findIndex((e) => e.name === 'etcd');
  for (const [k, e] of engines.entries()) {
    const ms = r.ms[k] as number[];
    const base = etcd >= 0 && etcd !== k ? (r.ms[etcd] as number[]) : undefined;
    const ratio =
      base === undefined
        ? ''
        : `   ×${fmt(median(ms) / median(base))} of etcd at p50, ×${fmt(quantile(ms, 0.99) / quantile(base, 0.99))} at p99`;
    console.log(`  ${e.name.padEnd(13)} ${latencySummary(ms)}${ratio}`);
  }
  cpuLine(engines, r.cpu);
}

async function concurrentPuts(store: Store, ops: number, inflight: number): Promise<number> {
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: inflight }, async () => {
      for (let i = next++; i < ops; i = next++) await store.put(`/bench/c/${i % 1000}`, VALUE);
    }),
  );
  return performance.now() - t0;
}

const put = (s: Store, i: number): Promise<unknown> => s.put(`/bench/p/${i % 100}`, VALUE);
const txn = (s: Store, i: number): Promise<unknown> =>
  s.txn(
    [{ key: `/bench/t/${i % 100}`, target: 'version', op: '>', value: -1 }],
    [{ type: 'put', key: `/bench/t/${i % 100}`, value: VALUE }],
  );
const get = (s: Store, i: number): Promise<unknown> => s.get(`/bench/p/${i % 100}`);

/** Put → watch delays of `n` puts on `e`, the watch on its second client. */
async function watched(e: Engine, prefix: string, n: number): Promise<number[]> {
  const w = e.watcher.watch(prefix, { fromRevision: (await e.writer.headRevision()) + 1 });
  try {
    return await watchDelay(e.writer, w, prefix, n);
  } finally {
    w.close();
  }
}

/** Grant (TTL 2 s) → the deletion of its key seen by a watcher on the second client, in ms. */
async function leaseExpiry(e: Engine, round: number): Promise<number> {
  const prefix = `/bench/l/${round}/`;
  const w = e.watcher.watch(prefix, { fromRevision: (await e.writer.headRevision()) + 1 });
  try {
    const t0 = performance.now();
    const lease = await e.writer.grantLease(2);
    await e.writer.put(`${prefix}k`, 'x', { lease: lease.id });
    for await (const b of w) {
      if (b.type === 'events' && b.events.some((ev) => ev.type === 'delete')) return performance.now() - t0;
    }
    throw new Error(`${e.name}: watch ended before the lease expired`);
  } finally {
    w.close();
  }
}

async function storeFigures(engines: readonly Engine[], args: string[]): Promise<void> {
  const ops = Number(arg(args, '--ops') ?? 2000);
  const inflight = Number(arg(args, '--inflight') ?? 64);
  const warmup = Number(arg(args, '--warmup') ?? 500);
  const leaseRounds = Number(arg(args, '--lease-rounds') ?? 3);
  console.log(`${engines.map((e) => e.name).join(' / ')}: ${ops} ops per figure, ${inflight} in flight`);
  for (const e of engines) {
    for (let i = 0; i < warmup; i++)
      await Promise.all([put(e.writer, i), txn(e.writer, i), get(e.writer, i)]);
    if (warmup > 0) {
      await concurrentPuts(e.writer, warmup, inflight);
      await watched(e, '/bench/warm/', Math.ceil(warmup / 4));
    }
  }
  report('sequential put', engines, await interleaved(engines, ops, put));
  report('txn (compare version + put)', engines, await interleaved(engines, ops, txn));
  report('linearizable get', engines, await interleaved(engines, ops, get));

  const rates = engines.map((): number[] => []);
  const rateCpu = engines.map(() => 0);
  for (let r = 0; r < 3; r++) {
    for (const [k, e] of engines.entries()) {
      const c0 = serverCpu(e);
      rates[k]?.push(await concurrentPuts(e.writer, ops, inflight));
      rateCpu[k] = (rateCpu[k] as number) + (serverCpu(e) - c0) / (ops * 3);
    }
  }
  console.log(`puts, ${inflight} in flight (median of 3 rounds)`);
  console.log(
    `  ${engines.map((e, k) => `${e.name} ${rate(ops, median(rates[k] as number[]))}`).join(', ')}`,
  );
  cpuLine(engines, rateCpu);

  const delays = engines.map((): number[] => []);
  const delayCpu = engines.map(() => 0);
  const perRound = Math.max(1, Math.ceil(Math.min(ops, 1000) / 4));
  for (let r = 0; r < 4; r++) {
    for (const [k, e] of engines.entries()) {
      const c0 = serverCpu(e);
      delays[k]?.push(...(await watched(e, `/bench/w/${r}/`, perRound)));
      delayCpu[k] = (delayCpu[k] as number) + (serverCpu(e) - c0) / (perRound * 4);
    }
  }
  report('put → watch event (watch on a second client)', engines, { ms: delays, cpu: delayCpu });

  const expiry = engines.map((): number[] => []);
  for (let r = 0; r < leaseRounds; r++) {
    const got = await Promise.all(engines.map((e) => leaseExpiry(e, r)));
    for (const [k, ms] of got.entries()) expiry[k]?.push(ms);
  }
  console.log(`lease TTL 2 s, never kept alive: grant → deletion seen by a watcher (${leaseRounds} rounds)`);
  for (const [k, e] of engines.entries()) {
    const ms = expiry[k] as number[];
    console.log(`  ${e.name.padEnd(13)} median ${fmt(median(ms))} ms, max ${fmt(Math.max(...ms))} ms`);
  }

  const pgEngine = engines.find((e) => e.name === 'postgres');
  if (pgEngine !== undefined) {
    const one = Math.min(ops, 500);
    const counter = await concurrentPuts(pgEngine.writer, ops, inflight);
    const seqMany = await sequenceBaseline(pgEngine.url, ops, inflight);
    const seqOne = await sequenceBaseline(pgEngine.url, one, 1);
    const counterOne = await concurrentPuts(pgEngine.writer, one, 1);
    console.log(
      'postgres: the gap-free revision (locked counter) against a SEQUENCE (gaps, commit order lost)',
    );
    console.log(`  ${inflight} in flight: counter ${rate(ops, counter)}, sequence ${rate(ops, seqMany)}`);
    console.log(`  1 in flight:  counter ${rate(one, counterOne)}, sequence ${rate(one, seqOne)}`);
    console.log(`  counter cost at ${inflight} in flight: ${fmt(counter / seqMany)}× the sequence's time`);
  }
}

export async function run(args: string[]): Promise<void> {
  const kinds = (arg(args, '--engines') ?? 'postgres,etcd,serve').split(',');
  const inflight = Number(arg(args, '--inflight') ?? 64);
  const workers = Number(arg(args, '--workers') ?? 150);
  const switches = Number(arg(args, '--switches') ?? 8);
  const dir = mkdtempSync(join(tmpdir(), 'muster-bench-postgres-'));
  const engines: Engine[] = [];
  try {
    for (const kind of kinds) engines.push(await startEngine(kind, args, Math.max(10, inflight), dir));
    await storeFigures(engines, args);
    if (workers > 0) {
      // One engine at a time: 150 processes fill both cores; the others stay idle meanwhile.
      console.log(
        `\nconfig propagation, ${workers} worker processes through one per-host relay, ${switches} switches`,
      );
      for (const e of engines) {
        console.log(`\n${e.name}:`);
        await runOne(e, 'relay', workers, switches, 100, 25).catch((err: unknown) => {
          console.log(`  failed: ${String(err)}`);
        });
      }
    }
  } finally {
    for (const e of engines) await e.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
