/**
 * Churn over real processes on a real 3-member etcd cluster: instances (test/partitions/fixtures/
 * member.ts) record their work in one history file while this harness kills them (-9), freezes them
 * past their TTL (SIGSTOP/SIGCONT), black-holes their store connections, makes them leave or drain,
 * and kills the etcd leader mid-hand-off. Afterwards the checker judges the history.
 *
 * The store is a 3-member etcd by default; `backend` runs the same churn on another store (the
 * PostgreSQL engine: its server fault is a kill -9 of the whole server mid-hand-off).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readPartitionStatus } from '../../src/partitions/index.js';
import { type ProcessHandle, spawnProcess } from '../../src/process/index.js';
import { openStore } from '../../src/store/index.js';
import {
  checkConvergence,
  checkOwnership,
  type CheckResult,
  type FaultProxy,
  FileHistory,
  historyNow,
  readHistory,
  startEtcd,
  startFaultProxy,
  type Violation,
  withTimeout,
} from '../../src/testing/index.js';
import { setTimeout as sleep } from 'node:timers/promises';

const FIXTURE = new URL('./fixtures/member.js', import.meta.url).pathname;

export interface ChurnOptions {
  /** How long to inject faults (a run with `faults` injects each of them at least once). */
  durationMs: number;
  partitions?: number;
  instances?: number;
  ttlSeconds?: number;
  seed?: number;
  log?: (line: string) => void;
  /** Members misbehave (work past their deadline), to show that the checker catches it. */
  ignoreDeadline?: boolean;
  /**
   * Only these faults, in this order, cycled (default: all seven kinds in a seeded order). The negative
   * control uses `['SIGSTOP past TTL']` so that one brief run is sure to freeze an owner past its TTL.
   */
  faults?: readonly ChurnFault[];
  /** How long the quiet period may take to converge (default 30 s). */
  convergeWithinMs?: number;
  /** The store under churn. Default: {@link etcdChurnBackend} (a 3-member etcd cluster). */
  backend?: () => Promise<ChurnBackend>;
}

/** A store for the churn: where members connect (each through its own fault proxies) and its server fault. */
export interface ChurnBackend {
  /** `host:port` of each server; every member gets one fault proxy per endpoint. */
  readonly endpoints: readonly string[];
  /** The store URL, direct. */
  readonly url: string;
  /** The store URL through proxies listening on `endpoints` (in the order of {@link endpoints}). */
  urlVia(endpoints: readonly string[]): string;
  /** The name of the server fault in the report, e.g. `'kill etcd leader mid-hand-off'`. */
  readonly faultName: string;
  /** Injects the server fault while a member leaves; `victimGone` resolves when the member exited. */
  fault(victimGone: () => Promise<void>): Promise<void>;
  close(): Promise<void>;
}

/** The default backend: a 3-member etcd; the fault kills the leader while a member hands off. */
export async function etcdChurnBackend(): Promise<ChurnBackend> {
  const cluster = await startEtcd({ members: 3 });
  return {
    endpoints: cluster.endpoints,
    url: cluster.url,
    urlVia: (endpoints) => `etcd://${endpoints.join(',')}`,
    faultName: 'kill etcd leader mid-hand-off',
    fault: async (victimGone) => {
      const leader = await cluster.leader(5000);
      await leader.kill();
      await victimGone();
      await sleep(1000);
      await leader.restart();
    },
    close: () => cluster.close(),
  };
}

/** The kinds of fault, by the action names the report counts. */
export type ChurnFault = 'SIGSTOP past TTL' | 'black hole past TTL';
const FAULT_CASE: Record<ChurnFault, number> = { 'SIGSTOP past TTL': 4, 'black hole past TTL': 5 };

export interface ChurnReport {
  readonly result: CheckResult;
  readonly violations: readonly Violation[];
  readonly actions: Record<string, number>;
  readonly convergeMs: number;
  /**
   * For a failure message: each fault with its victim and time, and the stderr tail of every member
   * (exited ones included) — an ownership that never ends names its member, and this says what
   * happened to it.
   */
  readonly trail: string;
  /**
   * Members that exited on their own (not killed by the harness, not a clean exit after `leave`),
   * with their exit and stderr tail. Each is also recorded as a `crash` in the history at the moment
   * the harness saw it, so the checker ends its ownerships there; a churn test fails on any.
   */
  readonly unexpectedExits: readonly string[];
}

interface Proc {
  readonly id: string;
  readonly child: ProcessHandle;
  readonly proxies: FaultProxy[];
  readonly exited: Promise<void>;
  readonly stderr: string;
}

export async function runChurn(options: ChurnOptions): Promise<ChurnReport> {
  const partitions = options.partitions ?? 192;
  const ttl = options.ttlSeconds ?? 2;
  const log = options.log ?? (() => undefined);
  let seed = options.seed ?? 42;
  const rand = (n: number): number => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
  const dir = mkdtempSync(join(tmpdir(), 'muster-churn-'));
  const historyPath = join(dir, 'history.jsonl');
  const history = new FileHistory(historyPath);
  const procs = new Map<string, Proc>();
  const actions: Record<string, number> = {};
  const faults: string[] = [];
  const tails = new Map<string, () => string>();
  let cluster: ChurnBackend | undefined;
  let serial = 0;
  /** Members the harness killed or told to leave: their exit is expected. */
  const killed = new Set<string>();
  const leaving = new Set<string>();
  const unexpectedExits: string[] = [];
  const tail = (text: string): string => (text.length > 1500 ? `…${text.slice(-1500)}` : text);

  const start = async (): Promise<Proc> => {
    const id = `m${serial++}`;
    const proxies = await Promise.all(cluster!.endpoints.map((target) => startFaultProxy({ target })));
    let onReady: () => void = () => undefined;
    let stderr = '';
    const child = await spawnProcess({
      command: [process.execPath, ...process.execArgv, FIXTURE],
      label: id,
      env: {
        MUSTER_STORE: cluster!.urlVia(proxies.map((p) => p.endpoint)),
        SERVICE: 'churn',
        ID: id,
        PARTITIONS: String(partitions),
        TTL: `${ttl}s`,
        HISTORY: historyPath,
        WORK_MS: '250',
        IGNORE_DEADLINE: options.ignoreDeadline === true ? '1' : '0',
      },
      stdout: 'ignore',
      ipc: 'json',
      onMessage: (m) => {
        if ((m as { ready?: boolean }).ready === true) onReady();
      },
      onLine: (_stream, line) => {
        stderr = (stderr + line + '\n').slice(-4000);
      },
    });
    tails.set(id, () => stderr);
    void child.exited.then((e) => {
      if (killed.has(id) || (leaving.has(id) && e.code === 0)) return;
      history.record({ type: 'crash', t: historyNow(), instance: id });
      unexpectedExits.push(`${id} exited on its own with ${e.code ?? e.signal}:\n${tail(stderr)}`);
    });
    const proc: Proc = {
      id,
      child,
      proxies,
      get stderr() {
        return stderr;
      },
      exited: child.gone.then(() => undefined),
    };
    await withTimeout(
      new Promise<void>((resolve, reject) => {
        onReady = resolve;
        void child.exited.then((e) =>
          reject(new Error(`${id} exited with ${e.code ?? e.signal}: ${stderr}`)),
        );
      }),
      30_000,
      `timed out after 30 s: ${id} to join`,
    );
    procs.set(id, proc);
    return proc;
  };

  const gone = async (proc: Proc): Promise<void> => {
    procs.delete(proc.id);
    await Promise.all(proc.proxies.map((p) => p.close()));
  };

  const pick = (): Proc => {
    const list = [...procs.values()];
    return list[rand(list.length)]!;
  };

  let victimId = '';
  const act = async (name: string, fn: () => Promise<void>): Promise<void> => {
    actions[name] = (actions[name] ?? 0) + 1;
    faults.push(`${historyNow().toFixed(0)} ${name} → ${victimId}`);
    log(`${(historyNow() % 100_000).toFixed(0)} ${name}`);
    await fn();
  };

  try {
    cluster = await (options.backend ?? etcdChurnBackend)();
    const n = options.instances ?? 5;
    for (let i = 0; i < n; i++) await start();
    if (options.faults !== undefined) {
      // A targeted run (the negative control) faults a member that owns something: first wait until
      // every partition has a settled, live owner.
      const store = await openStore(cluster.url);
      try {
        const deadline = Date.now() + 20_000;
        for (;;) {
          const status = await readPartitionStatus(store, 'churn');
          const live = [...procs.keys()];
          const owned = status.partitions.filter(
            (p) => p.settled && p.owner !== null && live.includes(p.owner),
          );
          if (owned.length === partitions || Date.now() > deadline) break;
          await sleep(200);
        }
      } finally {
        await store.close();
      }
    }
    const until = Date.now() + options.durationMs;
    // A targeted run injects each of its faults at least once, however short its duration; otherwise
    // every kind of fault in each cycle of seven, in a seeded order (kill -9 twice).
    const targeted = (): number[] => (options.faults ?? []).map((f) => FAULT_CASE[f]).reverse();
    let cycle: number[] = targeted();
    while (cycle.length > 0 || Date.now() < until) {
      const victim = pick();
      victimId = victim.id;
      if (cycle.length === 0 && options.faults !== undefined) {
        cycle = targeted();
      } else if (cycle.length === 0) {
        cycle = [0, 1, 2, 3, 4, 5, 6];
        for (let i = cycle.length - 1; i > 0; i--) {
          const j = rand(i + 1);
          [cycle[i], cycle[j]] = [cycle[j]!, cycle[i]!];
        }
      }
      switch (cycle.pop()) {
        case 0:
        case 1:
          await act('kill -9', async () => {
            killed.add(victim.id);
            await victim.child.kill();
            history.record({ type: 'crash', t: historyNow(), instance: victim.id });
            await gone(victim);
            await start();
          });
          break;
        case 2:
          await act('leave', async () => {
            leaving.add(victim.id);
            await victim.child.send({ cmd: 'leave' });
            await withTimeout(victim.exited, 20_000, `timed out after 20 s: ${victim.id} to leave`);
            await gone(victim);
            await start();
          });
          break;
        case 3:
          await act('drain+leave', async () => {
            await victim.child.send({ cmd: 'drain' });
            await sleep(300 + rand(700));
            leaving.add(victim.id);
            await victim.child.send({ cmd: 'leave' });
            await withTimeout(victim.exited, 20_000, `timed out after 20 s: ${victim.id} to leave`);
            await gone(victim);
            await start();
          });
          break;
        case 4:
          await act('SIGSTOP past TTL', async () => {
            victim.child.signal('SIGSTOP');
            await sleep(ttl * 1000 + 1500);
            victim.child.signal('SIGCONT');
          });
          break;
        case 5:
          await act('black hole past TTL', async () => {
            for (const p of victim.proxies) p.blackhole();
            await sleep(ttl * 1000 + 1500);
            for (const p of victim.proxies) p.cutAll();
            for (const p of victim.proxies) p.pass();
          });
          break;
        case 6:
          await act(cluster.faultName, async () => {
            leaving.add(victim.id);
            await victim.child.send({ cmd: 'leave' });
            await sleep(5);
            await cluster!.fault(() =>
              withTimeout(
                victim.exited,
                30_000,
                `timed out after 30 s: ${victim.id} to leave during the server fault`,
              ),
            );
            await gone(victim);
            await start();
          });
          break;
      }
      await sleep(300 + rand(1200));
    }

    // Quiet period: wait for convergence.
    const quietStart = Date.now();
    const store = await openStore(cluster.url);
    let violations: Violation[] = [];
    let result: CheckResult | undefined;
    let lastStatus: Awaited<ReturnType<typeof readPartitionStatus>> | undefined;
    try {
      for (;;) {
        await sleep(500);
        const status = await readPartitionStatus(store, 'churn');
        lastStatus = status;
        const live = [...procs.keys()];
        const settled = status.partitions.every(
          (p) => p.settled && p.owner !== null && live.includes(p.owner),
        );
        result = checkOwnership(readHistory(historyPath));
        const ids = Array.from({ length: partitions }, (_, i) => String(i));
        violations = [...result.violations, ...checkConvergence(result, { partitions: ids, live })];
        if (
          (settled && violations.length === 0) ||
          Date.now() - quietStart > (options.convergeWithinMs ?? 30_000)
        )
          break;
        // The negative control only needs the checker to catch the misbehaviour, not convergence.
        if (options.ignoreDeadline === true && result.violations.length > 0) break;
      }
    } finally {
      await store.close();
    }
    // Kept short: a failure message of ~100 KB made Node 20's test runner spin for minutes. The
    // stderr tails are those of the members a violation names (an ownership that never ended names
    // its member, and its tail says what happened to it).
    const named = new Set(
      violations.flatMap((v) => [...v.message.matchAll(/\bm\d+\b/g)].map((m) => m[0])).slice(0, 6),
    );
    // Nobody named (a fleet that did not converge): the live members' tails say why.
    const shown = named.size > 0 ? named : new Set([...procs.keys()].slice(0, 6));
    const unsettled = (lastStatus?.partitions ?? []).filter((p) => !p.settled).slice(0, 8);
    const trail = [
      'faults (history ms, fault → member):',
      ...faults,
      `instances at the end: ${(lastStatus?.instances ?? []).map((i) => `${i.id} ${i.state}/${i.health} owns ${i.owned}`).join('; ')}`,
      `unsettled partitions (assigned → owner): ${unsettled.map((p) => `${p.partition} ${p.assigned} → ${p.owner}`).join('; ')}`,
      ...[...tails]
        .filter(([id]) => shown.has(id))
        .map(([id, text]) => `--- ${id} stderr tail\n${tail(text())}`),
    ].join('\n');
    return {
      result,
      violations,
      actions,
      convergeMs: Date.now() - quietStart,
      trail,
      unexpectedExits,
    };
  } catch (err) {
    const tails = [...procs.values()].map((p) => `--- ${p.id}\n${tail(p.stderr)}`).join('\n');
    throw new Error(`${String(err)}\n${tails}`, { cause: err });
  } finally {
    for (const p of procs.values()) {
      killed.add(p.id);
      await p.child.kill(); // SIGKILL ends a stopped (SIGSTOP) process too
      await Promise.all(p.proxies.map((x) => x.close()));
    }
    await cluster?.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
