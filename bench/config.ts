/**
 * `npm run bench -- config [--workers 150] [--switches 8] [--via relay (default)|direct|both]
 *  [--store etcd|serve|postgres|both] [--task-interval 100] [--switch-wait 25]`
 *
 * 150 worker processes (the seed's figure) hold a configuration; the publisher schedules versions
 * `minLeadTime` ahead, one after another. Reports, per store and per delivery path:
 * - propagation: commit → every process holds the new version, p50/p99/max. The clock starts when the
 *   publisher *sends* its commit (the transaction), which is before the commit, so the figures are
 *   upper bounds. (The acknowledgement is no good as a start: on a host where 150 processes wake at
 *   once, the publisher itself may run tens of milliseconds after the commit.) Through a relay with a
 *   shared table, a process holds a version from the moment the relay wrote it to the table (its next
 *   `at()`/`timeline()` returns it, without its event loop running); the relay process reports each
 *   write, and a checker verifies the claim against every task: a task that started after the write
 *   must have seen the version. Directly, or without a table, a process holds a version when its own
 *   handle has applied the event; that figure ("each worker's handle applied it") is printed too.
 * - switch lateness: activation instant → the worker's `switch` handler, p50/p99/max;
 * - wrong-version tasks: the recorder's history checked against the final timeline (must be 0).
 * Delivery paths: `direct` (each worker its own store connection and watch) and `relay` (one
 * per-host relay process holds the watch and serves the workers over a Unix socket).
 */
import { type ChildProcess, fork } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadavg } from 'node:os';
import {
  ConfigKeys,
  type ConfigSource,
  initConfig,
  openConfig,
  publishConfig,
  readConfig,
  RelayClient,
} from '../src/config/index.js';
import { PreciseClock } from '../src/demo/precise-clock.js';
import { Fleet } from '../src/demo/fleet.js';
import { openStore } from '../src/store/index.js';
import { checkVersionHistory, startEtcd, startPostgres, startTempServe } from '../src/testing/index.js';
import { setTimeout as sleep } from 'node:timers/promises';
import { TABLE_POLL_GAP_MS } from '../src/config/relay-client.js';
import type { TableWriteReport } from '../src/demo/relay-process.js';
import { arg, latencySummary, quantile } from './stats.js';

/**
 * A task that started this long after a table write must have seen it: the worker reads the table at
 * most {@link TABLE_POLL_GAP_MS} late, and two processes' precise clocks agree to about a millisecond.
 */
const HOLD_CHECK_MARGIN_MS = TABLE_POLL_GAP_MS + 2;

/** Pause between the fleet being ready and the first publication, so start-up work has drained: 5 s. */
const SETTLE_MS = 5000;
/** Steady-state CPU is sampled over this long before the first publication: 5 s. */
const STEADY_MS = 5000;

/** CPU time (user + system) of these processes so far, ms; 0 where /proc is not available. */
function cpuMs(pids: readonly number[]): number {
  let ticks = 0;
  for (const pid of pids) {
    try {
      const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
      ticks += Number(fields[11] ?? 0) + Number(fields[12] ?? 0);
    } catch {
      // gone, or not Linux
    }
  }
  return ticks * 10; // USER_HZ is 100 on Linux
}
const precise = new PreciseClock();
const preciseNow = (): number => precise.now();

/** A store server the benchmark runs against. */
export interface Backend {
  readonly name: string;
  readonly url: string;
  close(): Promise<void>;
}

/** Starts a throw-away store server: `etcd` (one member), `serve` (in this process) or `postgres`. */
export async function startBackend(kind: string): Promise<Backend> {
  if (kind === 'etcd') {
    const etcd = await startEtcd();
    return { name: 'etcd 3.4 (1 member)', url: etcd.url, close: () => etcd.close() };
  }
  if (kind === 'postgres') {
    const pg = await startPostgres({ durable: true });
    return { name: 'postgres', url: await pg.createDatabase(), close: () => pg.close() };
  }
  const serve = await startTempServe();
  return { name: 'muster serve', url: serve.url, close: () => serve.close() };
}

async function startRelay(
  storeUrl: string,
  socket: string,
  tableWrites: TableWriteReport[],
): Promise<ChildProcess> {
  const child = fork(new URL('../src/demo/relay-process.js', import.meta.url), [], {
    env: { ...process.env, MUSTER_STORE: storeUrl, MUSTER_RELAY: socket, MUSTER_RELAY_REPORT: '1' },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  await new Promise<void>((resolve, reject) => {
    child.once('message', () => resolve());
    child.once('exit', (code) => reject(new Error(`relay exited with ${code}`)));
  });
  child.on('message', (m: TableWriteReport) => {
    if (m.t === 'table') tableWrites.push(m);
  });
  return child;
}

/**
 * One run of the fleet against `backend`: `workers` processes, delivered `via` a relay or directly;
 * prints its figures (see the module comment).
 */
export async function runOne(
  backend: Pick<Backend, 'url'>,
  via: string,
  workers: number,
  switches: number,
  taskInterval: number,
  switchWaitMs: number,
): Promise<void> {
  const store = await openStore(backend.url);
  const name = `bench-${via}-${Date.now()}`;
  const policy = await initConfig(store, name, {});
  const lead = policy.minLeadTimeMs;
  await publishConfig(store, name, { include_mood: false, delay_ms: 0 }, { in: lead });
  const dir = mkdtempSync(join(tmpdir(), 'muster-relay-'));
  const socket = join(dir, 'relay.sock');
  const tableWrites: TableWriteReport[] = [];
  const relay = via === 'relay' ? await startRelay(backend.url, socket, tableWrites) : undefined;
  const started = Date.now();
  const fleet = await Fleet.start({
    store: backend.url,
    config: name,
    workers,
    taskIntervalMs: taskInterval,
    readyTimeoutMs: 180_000,
    switchWaitMs,
    flushMs: 1000,
    ...(relay === undefined ? {} : { relay: socket }),
  }).catch(async (err: unknown) => {
    relay?.kill('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
    await store.close();
    throw err;
  });
  console.log(`  ${workers} workers ready in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  // Starting 150 Node processes saturates the machine for a while after the last one is ready.
  await sleep(SETTLE_MS);
  // Steady state before any publication: what holding the configuration costs the host.
  const cpu0 = cpuMs(fleet.pids);
  const relayCpu0 = cpuMs(relay?.pid === undefined ? [] : [relay.pid]);
  const idle0 = Date.now();
  await sleep(STEADY_MS);
  const idleSecs = (Date.now() - idle0) / 1000;
  const steady = `workers ${((cpuMs(fleet.pids) - cpu0) / 10 / idleSecs).toFixed(0)}% of a core in total, relay ${(
    (cpuMs(relay?.pid === undefined ? [] : [relay.pid]) - relayCpu0) /
    10 /
    idleSecs
  ).toFixed(1)}%`;
  const publishedAt = new Map<number, number>();
  const revisionOf = new Map<number, number>();
  const keys = new ConfigKeys(name);
  const publishMs: number[] = [];
  // Reference watchers in this process: one straight on the store, one through the relay (if any).
  const probes: { label: string; at: Map<number, number>; close: () => Promise<void> }[] = [];
  const probe = async (label: string, source: ConfigSource, close: () => Promise<void>): Promise<void> => {
    const at = new Map<number, number>();
    const h = openConfig(source, name, { clock: new PreciseClock() });
    h.on('version', ({ version }) => at.set(version.version, preciseNow()));
    await h.ready();
    probes.push({ label, at, close: async () => (await h.close(), await close()) });
  };
  await probe('one watcher in the publisher process', store, async () => undefined);
  if (relay !== undefined) {
    const client = await RelayClient.connect(socket);
    await probe('one more process behind the relay (the publisher)', client, () => client.close());
  }
  // The publisher's store, noting when each publication's commit (its first transaction) is sent.
  let commitSentAt: number | undefined;
  const timed = new Proxy(store, {
    get(target, prop) {
      const v: unknown = Reflect.get(target, prop, target);
      if (typeof v !== 'function') return v;
      if (prop !== 'txn') return v.bind(target) as unknown;
      return (...a: Parameters<typeof store.txn>) => ((commitSentAt ??= preciseNow()), store.txn(...a));
    },
  });
  const load0 = loadavg()[0] ?? 0;
  const measuredFrom = Date.now();
  try {
    // one warm-up switch (not counted), then the measured ones
    for (let i = 0; i <= switches; i++) {
      const t0 = preciseNow();
      commitSentAt = undefined;
      const v = await publishConfig(timed, name, { include_mood: i % 2 === 0, delay_ms: 0 }, { in: lead });
      const acked = preciseNow();
      if (i > 0) {
        publishedAt.set(v.version, commitSentAt ?? t0);
        publishMs.push(acked - t0);
        const kv = (await store.range(keys.version(v.version))).kvs[0];
        if (kv !== undefined) revisionOf.set(v.version, kv.modRevision);
      }
      await fleet
        .waitFor(
          () => fleet.received.filter((r) => r.version === v.version).length === workers,
          lead + 10_000,
          `every worker to receive version ${v.version}`,
        )
        .catch((err: unknown) => {
          const got = fleet.received.filter((r) => r.version === v.version).length;
          throw new Error(`${String(err)}: ${got}/${workers} received it`);
        });
      await sleep(Math.max(0, v.activateAt - Date.now() + 300));
      await fleet.waitFor(
        () => fleet.switches.filter((s) => s.version === v.version).length === workers,
        5000,
        `every worker to switch to version ${v.version}`,
      );
    }
  } finally {
    for (const p of probes) await p.close();
    await fleet.stop();
    relay?.kill('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
  }
  const propagation = fleet.received
    .filter((r) => publishedAt.has(r.version))
    .map((r) => r.at - (publishedAt.get(r.version) as number));
  // Through the shared table: when the relay wrote each version, and whether every task after that held it.
  const tableAt = new Map<number, number>();
  for (const [version, revision] of revisionOf) {
    const w = tableWrites.find((x) => x.revision >= revision);
    if (w !== undefined) tableAt.set(version, w.at);
  }
  let heldAfter = 0;
  const notHeld: string[] = [];
  for (const [version, at] of tableAt) {
    for (const h of fleet.held) {
      if (h.startedAt <= at + HOLD_CHECK_MARGIN_MS) continue;
      heldAfter++;
      if (h.newest < version)
        notHeld.push(`${h.worker} at +${(h.startedAt - at).toFixed(1)} ms held ${h.newest} < ${version}`);
    }
  }
  const slowest = [...publishedAt].map(([version, t0]) => {
    const got = fleet.received.filter((r) => r.version === version);
    const last = got.reduce((a, b) => (b.at > a.at ? b : a), got[0] as (typeof got)[number]);
    return `${last.worker} ${(last.at - t0).toFixed(0)}`;
  });
  const everyone = [...publishedAt].map(([version, t0]) =>
    Math.max(...fleet.received.filter((r) => r.version === version).map((r) => r.at - t0)),
  );
  const lateness = fleet.switches.filter((s) => publishedAt.has(s.version)).map((s) => s.latenessMs);
  const state = await readConfig(store, name);
  const report = checkVersionHistory(fleet.tasks, state.versions);
  await store.close();
  for (const p of probes) {
    const ms = [...publishedAt].flatMap(([v, t0]) => (p.at.has(v) ? [(p.at.get(v) as number) - t0] : []));
    console.log(`  reference: ${p.label}: ${latencySummary(ms)}`);
  }
  console.log(
    `  load average (1 min) at start and end: ${load0.toFixed(1)}, ${(loadavg()[0] ?? 0).toFixed(1)}`,
  );
  console.log(`  steady state (tasks running, no publication), CPU: ${steady}`);
  console.log(`  publish call (read policy + commit, fsync included): ${latencySummary(publishMs)}`);
  if (relay !== undefined) {
    const toTable = [...tableAt].map(([v, at]) => at - (publishedAt.get(v) as number));
    console.log(
      `  workers reading the shared table: ${fleet.tableReaders} of ${workers}; tables written for ${tableAt.size} of ${publishedAt.size} versions`,
    );
    console.log(`  propagation (commit → table written: every process holds it): ${latencySummary(toTable)}`);
    console.log(
      `  hold check: ${heldAfter} tasks started ≥ ${HOLD_CHECK_MARGIN_MS} ms after a table write; ${notHeld.length} did not hold that version${notHeld.length > 0 ? ` (${notHeld.slice(0, 3).join('; ')})` : ''}`,
    );
  }
  console.log(`  propagation (commit → each worker's handle applied it): ${latencySummary(propagation)}`);
  console.log(
    `  … to the last worker (per version):   p50 ${quantile(everyone, 0.5).toFixed(2)} ms, max ${Math.max(...everyone).toFixed(2)} ms`,
  );
  console.log(`  last worker to apply each version (ms): ${slowest.join(', ')}`);
  console.log(`  switch lateness (instant → switch handler):  ${latencySummary(lateness)}`);
  const perVersion = (label: string, rows: readonly { version: number; ms: number }[]): void => {
    const cells = [...publishedAt.keys()].map((v) => {
      const ms = rows.filter((r) => r.version === v).map((r) => r.ms);
      return `${quantile(ms, 0.5).toFixed(0)}/${quantile(ms, 0.99).toFixed(0)}`;
    });
    console.log(`  ${label} p50/p99 per version (ms): ${cells.join('  ')}`);
  };
  perVersion(
    'propagation',
    fleet.received
      .filter((r) => publishedAt.has(r.version))
      .map((r) => ({ version: r.version, ms: r.at - (publishedAt.get(r.version) as number) })),
  );
  perVersion(
    'lateness   ',
    fleet.switches
      .filter((s) => publishedAt.has(s.version))
      .map((s) => ({ version: s.version, ms: s.latenessMs })),
  );
  const refusedLater = fleet.tasks.filter((t) => t.version === null && t.startedAt >= measuredFrom).length;
  console.log(
    `  tasks: ${report.tasks} recorded, ${report.ran} ran, ${report.refused} refused (${refusedLater} of them ` +
      `after every worker was ready); wrong version: ${report.violations.length}`,
  );
}

export async function run(args: string[]): Promise<void> {
  const workers = Number(arg(args, '--workers') ?? '150');
  const switches = Number(arg(args, '--switches') ?? '8');
  const taskInterval = Number(arg(args, '--task-interval') ?? '100');
  const switchWaitMs = Number(arg(args, '--switch-wait') ?? '25');
  const stores =
    (arg(args, '--store') ?? 'both') === 'both' ? ['etcd', 'serve'] : [arg(args, '--store') ?? 'etcd'];
  const vias =
    (arg(args, '--via') ?? 'relay') === 'both' ? ['relay', 'direct'] : [arg(args, '--via') ?? 'relay'];
  console.log(
    `config benchmark: ${workers} worker processes, ${switches} switches, a task every ~${taskInterval} ms per worker`,
  );
  for (const kind of stores) {
    const backend = await startBackend(kind);
    try {
      for (const via of vias) {
        console.log(
          `\n${backend.name}, ${via === 'relay' ? 'through one per-host relay' : 'one watch per worker'}:`,
        );
        await runOne(backend, via, workers, switches, taskInterval, switchWaitMs).catch((err: unknown) => {
          console.log(`  failed: ${String(err)}`);
        });
      }
    } finally {
      await backend.close();
    }
  }
}
