/**
 * `npm run bench -- failover [--instances 10] [--partitions 256] [--ttl 3] [--rounds 5]`
 *
 * Real instance processes (test/partitions/fixtures/member.ts) on a local one-member etcd. Each
 * round: (a) a graceful leave — time from the leave call until every partition of the leaver runs
 * elsewhere; (b) a `kill -9` — the same from the kill; (c) two joins — time from the joiner being
 * registered until the fleet is settled again; (d) partitions moved per event against the minimum
 * (the leaver's partitions; what the joiner ends up with).
 */
import { type ChildProcess, fork } from 'node:child_process';
import { readPartitionStatus } from '../src/partitions/index.js';
import { openStore } from '../src/store/index.js';
import type { Store } from '../src/store/types.js';
import { historyNow, startEtcd } from '../src/testing/index.js';
import { fmt, quantile } from './stats.js';
import { setTimeout as sleep } from 'node:timers/promises';

const FIXTURE = new URL('../test/partitions/fixtures/member.js', import.meta.url).pathname;

interface Proc {
  readonly id: string;
  readonly child: ChildProcess;
  readonly exited: Promise<void>;
}

interface Acquisition {
  readonly partition: string;
  readonly instance: string;
  readonly t: number;
}

function arg(args: string[], name: string, fallback: number): number {
  const i = args.indexOf(`--${name}`);
  const v = i >= 0 ? Number(args[i + 1]) : Number.NaN;
  return Number.isFinite(v) ? v : fallback;
}

export async function run(args: string[]): Promise<void> {
  const n = arg(args, 'instances', 10);
  const partitions = arg(args, 'partitions', 256);
  const ttl = arg(args, 'ttl', 3);
  const rounds = arg(args, 'rounds', 5);
  const cluster = await startEtcd({ members: 1 });
  const store: Store = await openStore(cluster.url);
  const procs = new Map<string, Proc>();
  const acquisitions: Acquisition[] = [];
  const owner = new Map<string, string>();
  let serial = 0;

  const start = async (): Promise<Proc> => {
    const id = `f${serial++}`;
    const child = fork(FIXTURE, [], {
      env: {
        ...process.env,
        MUSTER_STORE: cluster.url,
        SERVICE: 'bench',
        ID: id,
        PARTITIONS: String(partitions),
        TTL: `${ttl}s`,
        EVENTS: '1',
      },
      stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
    });
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.on('message', (m: { acquired?: string; t?: number }) => {
      if (m.acquired !== undefined && m.t !== undefined) {
        acquisitions.push({ partition: m.acquired, instance: id, t: m.t });
        owner.set(m.acquired, id);
      }
    });
    await new Promise<void>((resolve) =>
      child.on('message', (m: { ready?: boolean }) => m.ready && resolve()),
    );
    const proc = { id, child, exited };
    procs.set(id, proc);
    return proc;
  };

  const settled = async (limitMs = 20_000): Promise<void> => {
    const t0 = Date.now();
    for (;;) {
      const status = await readPartitionStatus(store, 'bench');
      if (status.partitions.every((p) => p.settled && p.owner !== null && procs.has(p.owner))) return;
      if (Date.now() - t0 > limitMs) throw new Error('the fleet did not settle');
      await sleep(20);
    }
  };

  /** Waits until every partition in `moving` was acquired by someone else after t0; returns the latencies. */
  const takenOver = async (moving: readonly string[], from: string, t0: number): Promise<number[]> => {
    for (;;) {
      const done = moving.map((p) =>
        acquisitions.find((a) => a.partition === p && a.instance !== from && a.t >= t0),
      );
      if (done.every((a) => a !== undefined)) return done.map((a) => a.t - t0);
      await sleep(5);
    }
  };

  const results = {
    leaveEvent: [] as number[],
    leavePartition: [] as number[],
    killEvent: [] as number[],
    killPartition: [] as number[],
    join: [] as number[],
    moves: [] as { kind: string; moved: number; minimum: number }[],
  };

  try {
    for (let i = 0; i < n; i++) await start();
    await settled(60_000);
    await sleep(500);
    for (let round = 0; round < rounds; round++) {
      for (const kind of ['leave', 'kill'] as const) {
        const victim = [...procs.values()][Math.floor(Math.random() * procs.size)]!;
        const moving = [...owner].filter(([, i]) => i === victim.id).map(([p]) => p);
        const before = acquisitions.length;
        const t0 = historyNow();
        if (kind === 'leave') victim.child.send({ cmd: 'leave' });
        else victim.child.kill('SIGKILL');
        const latencies = await takenOver(moving, victim.id, t0);
        await victim.exited;
        procs.delete(victim.id);
        await settled();
        (kind === 'leave' ? results.leavePartition : results.killPartition).push(...latencies);
        (kind === 'leave' ? results.leaveEvent : results.killEvent).push(Math.max(...latencies));
        results.moves.push({ kind, moved: acquisitions.length - before, minimum: moving.length });
        await sleep(300);

        const beforeJoin = acquisitions.length;
        const joiner = await start();
        const tj = historyNow();
        await settled();
        results.join.push(historyNow() - tj);
        const gained = [...owner].filter(([, i]) => i === joiner.id).length;
        results.moves.push({ kind: 'join', moved: acquisitions.length - beforeJoin, minimum: gained });
        await sleep(300);
      }
    }
  } finally {
    for (const p of procs.values()) p.child.kill('SIGKILL');
    await Promise.all([...procs.values()].map((p) => p.exited));
    await store.close();
    await cluster.close();
  }

  const line = (name: string, xs: number[]): string =>
    `${name.padEnd(44)} p50 ${fmt(quantile(xs, 0.5)).padStart(7)} ms   p99 ${fmt(quantile(xs, 0.99)).padStart(7)} ms   max ${fmt(Math.max(...xs)).padStart(7)} ms   n=${xs.length}`;
  console.log(
    `failover: ${n} instances, ${partitions} partitions, TTL ${ttl} s, ${rounds} rounds, local etcd`,
  );
  console.log(line('(a) graceful leave, all partitions elsewhere', results.leaveEvent));
  console.log(line('    per partition', results.leavePartition));
  console.log(line('(b) kill -9, all partitions elsewhere', results.killEvent));
  console.log(line('    per partition', results.killPartition));
  console.log(line('(c) join, fleet settled again', results.join));
  for (const kind of ['leave', 'kill', 'join']) {
    const m = results.moves.filter((x) => x.kind === kind);
    const moved = m.reduce((s, x) => s + x.moved, 0);
    const minimum = m.reduce((s, x) => s + x.minimum, 0);
    console.log(
      `(d) moves per ${kind.padEnd(5)}: ${moved} moved / ${minimum} minimum = ×${fmt(moved / Math.max(1, minimum))}`,
    );
  }
}
