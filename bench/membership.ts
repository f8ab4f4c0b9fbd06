/**
 * `npm run bench -- membership [--instances 150] [--kill 15] [--watchers 3] [--ttl 3s] [--stagger 20ms]
 *  [--cold] [--store URL]`
 *
 * N instances, each a separate process, join one service on a local etcd (started here unless
 * `--store` names one). Measures, on one machine's clock:
 * - join → visible in every watcher, per instance (send time of the join in the child, to the last
 *   watcher's update in this process), and the wall time until every watcher sees all N;
 * - after `kill -9` of K instances at once, the time until every watcher sees each of them gone.
 * Goals (issue 5): join visible everywhere < 200 ms; a crash detected < TTL + 500 ms.
 * Each process warms up with one join/leave on another service before the measured join, so the
 * figure is propagation, not a cold JIT; `--cold` measures the process's first transaction instead.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { type InstanceView, watchInstances } from '../src/membership/index.js';
import { openStore } from '../src/store/index.js';
import type { Store } from '../src/store/types.js';
import { type EtcdCluster, startEtcd } from '../src/testing/index.js';
import { toMillis } from '../src/util/duration.js';
import { hostWallMs } from '../src/util/host-clock.js';
import { fmt, latencySummary } from './stats.js';

const FIXTURE = new URL('../test/membership/fixtures/member.js', import.meta.url).pathname;
/** Wall-clock ms with sub-ms precision, comparable across processes on one machine. */
const wallNow = (): number => hostWallMs();

interface Child {
  readonly id: string;
  readonly proc: ChildProcess;
  joinSentAt: number;
}

/** Starts a member process that opens its session and waits; `join()` tells it to join. */
function spawnMember(
  url: string,
  service: string,
  id: string,
  ttl: string,
  cold: boolean,
): Promise<Child & { join(): Promise<void> }> {
  const proc = spawn(
    process.execPath,
    [
      FIXTURE,
      '--store',
      url,
      '--service',
      service,
      '--id',
      id,
      '--ttl',
      ttl,
      '--wait',
      ...(cold ? ['--cold'] : []),
    ],
    { stdio: ['pipe', 'pipe', 'inherit'] },
  );
  const lines = createInterface({ input: proc.stdout as NodeJS.ReadableStream });
  let joined: ((at: number) => void) | undefined;
  let failed: ((err: Error) => void) | undefined;
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${id}: not started within 120 s`)), 120_000);
    proc.once('exit', (code) => {
      const err = new Error(`${id} exited with ${code}${lostReason ? `: ${lostReason}` : ''}`);
      reject(err);
      failed?.(err);
    });
    let lostReason: string | undefined;
    lines.on('line', (line) => {
      const msg = JSON.parse(line) as {
        opened?: boolean;
        ready?: boolean;
        joinSentAt: number;
        lost?: string;
      };
      if (msg.lost !== undefined) lostReason = msg.lost;
      if (msg.ready === true) joined?.(msg.joinSentAt);
      if (msg.opened !== true) return;
      clearTimeout(timer);
      const child: Child & { join(): Promise<void> } = {
        id,
        proc,
        joinSentAt: Number.NaN,
        join: () =>
          new Promise<void>((res, rej) => {
            failed = rej;
            joined = (at) => {
              child.joinSentAt = at;
              res();
            };
            proc.stdin?.write('join\n');
          }),
      };
      resolve(child);
    });
  });
}

/** Records, per view, the first time each id appears and disappears. */
function track(views: readonly InstanceView[]): { seen: Map<string, number>[]; gone: Map<string, number>[] } {
  const seen = views.map(() => new Map<string, number>());
  const gone = views.map(() => new Map<string, number>());
  views.forEach((v, i) =>
    v.on('update', (u) => {
      const t = wallNow();
      for (const c of u.changes) {
        if (c.type === 'joined' && !seen[i]?.has(c.instance.id)) seen[i]?.set(c.instance.id, t);
        if (c.type === 'left' && !gone[i]?.has(c.instance.id)) gone[i]?.set(c.instance.id, t);
      }
    }),
  );
  return { seen, gone };
}

async function until(predicate: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > end) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

export async function run(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      instances: { type: 'string', default: '150' },
      kill: { type: 'string', default: '15' },
      watchers: { type: 'string', default: '3' },
      ttl: { type: 'string', default: '3s' },
      store: { type: 'string' },
      concurrency: { type: 'string', default: '4' },
      stagger: { type: 'string', default: '20ms' },
      cold: { type: 'boolean', default: false },
    },
  });
  const n = Number(values.instances);
  const k = Math.min(n, Number(values.kill));
  const ttlMs = toMillis(values.ttl, 'ttl');
  let etcd: EtcdCluster | undefined;
  const children: Child[] = [];
  const stores: Store[] = [];
  try {
    if (values.store === undefined) etcd = await startEtcd();
    const url = values.store ?? (etcd as EtcdCluster).url;
    const service = `bench-${process.pid}`;
    for (let i = 0; i < Number(values.watchers); i++) stores.push(await openStore(url));
    const views = stores.map((s) => watchInstances(s, service));
    await Promise.all(views.map((v) => v.ready));
    const { seen, gone } = track(views);

    // Start N processes, a few at a time (each loads Node and gRPC); each opens its session and waits.
    const t0 = wallNow();
    const ids = Array.from({ length: n }, (_, i) => `m${String(i).padStart(3, '0')}`);
    const started: (Child & { join(): Promise<void> })[] = [];
    let next = 0;
    await Promise.all(
      Array.from({ length: Number(values.concurrency) }, async () => {
        while (next < ids.length) {
          const id = ids[next++] as string;
          const child = await spawnMember(url, service, id, values.ttl, values.cold);
          children.push(child);
          started.push(child);
          if (started.length % 25 === 0) process.stderr.write(`  ${started.length} started\n`);
        }
      }),
    );
    const startSeconds = (wallNow() - t0) / 1000;
    process.stderr.write(`started ${n} processes in ${fmt(startSeconds)} s; joining\n`);
    await new Promise((r) => setTimeout(r, 2000)); // let the start-up CPU storm settle

    // Join: one instance every `stagger` ms (0: all at once).
    const stagger = toMillis(values.stagger, 'stagger');
    const tJoin = wallNow();
    const joins: Promise<void>[] = [];
    for (const c of started) {
      joins.push(c.join());
      if (stagger > 0) await new Promise((r) => setTimeout(r, stagger));
    }
    await Promise.all(joins);
    await until(() => seen.every((m) => m.size >= n), 30_000, 'every watcher sees every instance');
    const allSeenAt = Math.max(...seen.flatMap((m) => [...m.values()]));
    const joinLatency = children.map(
      (c) => Math.max(...seen.map((m) => m.get(c.id) as number)) - c.joinSentAt,
    );

    process.stderr.write(`all joined; killing ${k}\n`);
    // Crash: kill -9 K instances at once.
    await new Promise((r) => setTimeout(r, 1000)); // let the start-up CPU storm settle
    const victims = children.slice(0, k);
    const tKill = wallNow();
    for (const v of victims) v.proc.kill('SIGKILL');
    await until(() => gone.every((m) => victims.every((v) => m.has(v.id))), ttlMs + 15_000, 'crashes seen');
    const crashLatency = victims.map((v) => Math.max(...gone.map((m) => m.get(v.id) as number)) - tKill);

    // Graceful: SIGTERM the rest; they leave at once.
    const rest = children.slice(k);
    const tTerm = wallNow();
    for (const c of rest) c.proc.kill('SIGTERM');
    await until(() => gone.every((m) => rest.every((c) => m.has(c.id))), 30_000, 'leaves seen');
    const leaveAll = Math.max(...gone.flatMap((m) => rest.map((c) => m.get(c.id) as number))) - tTerm;

    console.log(
      `membership on ${etcd ? 'a local etcd (1 member)' : url}: ${n} instance processes, ${views.length} watchers, TTL ${values.ttl}`,
    );
    console.log(
      `  join → visible in every watcher:   ${latencySummary(joinLatency)}   goal < 200 ms` +
        (values.cold
          ? " (cold: the join is each process's first transaction)"
          : ' (warm: after one join/leave)'),
    );
    console.log(
      `  all ${n} visible everywhere:         ${fmt(allSeenAt - tJoin)} ms after the first join (joins ${stagger} ms apart)`,
    );
    console.log(
      `  (starting the ${n} processes took ${fmt(startSeconds)} s: Node + gRPC start-up on 2 cores)`,
    );
    console.log(
      `  kill -9 of ${k} → gone everywhere:   ${latencySummary(crashLatency)}   goal < TTL + 500 ms = ${ttlMs + 500} ms`,
    );
    console.log(`  SIGTERM of ${rest.length} → all gone:        ${fmt(leaveAll)} ms`);
    for (const v of views) v.close();
  } finally {
    for (const c of children)
      if (c.proc.exitCode === null && c.proc.signalCode === null) c.proc.kill('SIGKILL');
    await Promise.all(stores.map((s) => s.close()));
    await etcd?.close();
  }
}
