/**
 * `muster demo`: seed 000 made real, in one command.
 *
 * 1. Start the store (embedded `muster serve` in-process, or etcd from the harness), create `pingpong`.
 * 2. Spawn worker processes that each run a stream of ping/pong tasks and report which version each
 *    task used.
 * 3. Schedule a new version a few seconds ahead and show, live, who received it and who switched when.
 * 4. Pause the store for longer than `maxStaleness`: every worker refuses tasks, then recovers.
 * 5. Summarise: the instant, each worker's first task on the new version and its lateness, and the
 *    number of tasks that used the wrong version according to the recorder and checker (must be 0).
 */
import { initConfig, publishConfig, readConfig } from '../config/index.js';
import { checkVersionHistory } from '../config/internal.js';
import { systemClock } from '../clock.js';
import { throwIfAborted } from '../errors.js';
import { openStore } from '../store/index.js';
import { formatDuration } from '../util/duration.js';
import { type DemoLaunchers, startDemoBackend } from './backend.js';
import type { PongSettings } from './config-worker.js';
import { Fleet } from './fleet.js';

export interface ConfigDemoOptions {
  /** How to start the store and the fault proxy: `muster/testing`'s harnesses (see {@link DemoLaunchers}). */
  launchers: DemoLaunchers;
  /** Worker processes. Default 10 (the seed's `--scale worker=10`). */
  workers?: number;
  /** How far ahead the new version is scheduled, ms. Default 5000 (the seed's 5 s). */
  leadMs?: number;
  /** How long the store is paused, ms. Default maxStaleness + 1.5 s. */
  pauseMs?: number;
  /** An existing store to use instead of starting one. */
  store?: string;
  /** Which store to start when `store` is not given. Default `'serve'`. */
  engine?: 'serve' | 'etcd';
  /** Where to print. Default: stdout. */
  write?: (line: string) => void;
  /** Ends the demo early (Ctrl-C): workers are stopped and the store closed; rejects `MUSTER_ABORTED`. */
  signal?: AbortSignal;
}

export interface ConfigDemoResult {
  readonly activateAt: number;
  readonly wrongVersion: number;
  readonly tasks: number;
  readonly refusedDuringPause: number;
  readonly ranWhileUnverifiable: number;
  readonly workersRefusing: number;
  readonly workersRecovered: number;
  /** Longest time from the store's resumption to a worker's first task that ran again, ms. */
  readonly slowestRecoveryMs: number;
}

const NAME = 'pingpong';

export async function runConfigDemo(options: ConfigDemoOptions): Promise<ConfigDemoResult> {
  const log = options.write ?? ((line: string) => process.stdout.write(`${line}\n`));
  const workers = options.workers ?? 10;
  const leadMs = options.leadMs ?? 5000;
  const t = (ms = Date.now()): string => new Date(ms).toISOString().slice(11, 23);
  const pad = (s: string): string => s.padEnd(10);
  /** A wait condition that also ends the wait when the demo is aborted. */
  const until = (done: boolean): boolean => {
    throwIfAborted(options.signal);
    return done;
  };

  log('muster demo: scheduled configuration (seed 000)');
  const backend = await startDemoBackend(options.launchers, options.store, options.engine ?? 'serve');
  log(`store: ${backend.description}`);
  const store = await openStore(backend.url);
  let fleet: Fleet | undefined;
  try {
    const name = await freshName(store);
    const policy = await initConfig(store, name, {
      schema: {
        type: 'object',
        properties: { include_mood: { type: 'boolean' }, delay_ms: { type: 'number', minimum: 0 } },
        required: ['include_mood', 'delay_ms'],
      },
    });
    log(
      `created configuration '${name}': maxStaleness ${formatDuration(policy.maxStalenessMs)}, maxClockSkew ` +
        `${formatDuration(policy.maxClockSkewMs)}, minLeadTime ${formatDuration(policy.minLeadTimeMs)}`,
    );
    const v1 = await publishConfig<PongSettings>(
      store,
      name,
      { include_mood: false, delay_ms: 1 },
      {
        in: policy.minLeadTimeMs,
        note: 'initial',
      },
    );
    fleet = await Fleet.start({ store: backend.workerUrl, config: name, workers, taskIntervalMs: 20 });
    log(`started ${workers} worker processes; each runs a ping/pong task every ~20 ms`);
    await fleet.waitFor(() => until(Date.now() > v1.activateAt + 300), 30_000, 'version 1 to be in force');
    log(`[${t()}] version 1 ${JSON.stringify(v1.value)} is in force everywhere`);

    // ---- the scheduled switch -------------------------------------------------------------------
    const f = fleet;
    const firstOnV2 = new Map<string, number>();
    const seenSwitch = new Set<string>();
    let v2activate = Infinity;
    const unsubscribe = f.onMessage((worker, m) => {
      if (m.t === 'version' && m.version === 2 && !m.cancelled) {
        log(`[${t(m.at)}] ${pad(worker)} received version 2`);
      } else if (m.t === 'switch' && m.version === 2 && !seenSwitch.has(worker)) {
        seenSwitch.add(worker);
        log(`[${t(m.at)}] ${pad(worker)} switch event     ${fmtLate(m.latenessMs)} after the instant`);
      } else if (m.t === 'tasks') {
        for (const [startedAt, version] of m.tasks) {
          if (version === 2 && !firstOnV2.has(worker)) {
            firstOnV2.set(worker, startedAt);
            log(
              `[${t(startedAt)}] ${pad(worker)} first task on v2 ${fmtLate(startedAt - v2activate)} after the instant`,
            );
          }
        }
      }
    });
    const v2 = await publishConfig<PongSettings>(
      store,
      name,
      { include_mood: true, delay_ms: 2 },
      {
        in: leadMs,
        note: 'include mood',
      },
    );
    v2activate = v2.activateAt;
    log(
      `[${t()}] config scheduled to take effect at: ${new Date(v2.activateAt).toISOString()} (in ${formatDuration(leadMs)})`,
    );
    await f.waitFor(
      () => until(firstOnV2.size === workers && seenSwitch.size === workers),
      leadMs + 30_000,
      'every worker to switch',
    );
    unsubscribe();
    await systemClock.sleep(300, options.signal);

    log('');
    log(`summary of the switch to version 2, scheduled for ${new Date(v2.activateAt).toISOString()}:`);
    log('  WORKER      RECEIVED BEFORE   SWITCH EVENT   FIRST TASK ON v2');
    for (const w of f.names) {
      const rec = f.received.find((r) => r.worker === w && r.version === 2);
      const sw = f.switches.find((s) => s.worker === w && s.version === 2);
      const first = firstOnV2.get(w);
      log(
        `  ${pad(w)}  ${(rec ? formatDuration(v2.activateAt - rec.at) : '-').padEnd(16)}  ` +
          `${(sw ? fmtLate(sw.latenessMs) : '-').padEnd(13)}  ${first === undefined ? '-' : fmtLate(first - v2.activateAt)}`,
      );
    }
    const firstLate = [...firstOnV2.values()].map((s) => s - v2.activateAt);
    log(
      `  first task on v2: lateness median ${fmtLate(median(firstLate))}, max ${fmtLate(Math.max(...firstLate))} ` +
        '(tasks start every ~20 ms, so this is the task cadence, not a delay)',
    );

    // ---- fail closed ----------------------------------------------------------------------------
    const pauseMs = options.pauseMs ?? policy.maxStalenessMs + 1500;
    log('');
    log(
      `[${t()}] pausing the store for ${formatDuration(pauseMs)} (maxStaleness ${formatDuration(policy.maxStalenessMs)}): ` +
        'workers must refuse tasks rather than guess',
    );
    const refusing = new Map<string, number>();
    const recovered = new Map<string, number>();
    let pausedAt = 0;
    let resumedAt = Infinity;
    const unsub2 = f.onMessage((worker, m) => {
      if (m.t !== 'tasks') return;
      for (const [startedAt, version, code] of m.tasks) {
        if (version === null && startedAt > pausedAt && !refusing.has(worker)) {
          refusing.set(worker, startedAt);
          log(
            `[${t(startedAt)}] ${pad(worker)} refuses tasks: ${code} (${formatDuration(startedAt - pausedAt)} after the pause)`,
          );
        }
        if (version !== null && startedAt > resumedAt && refusing.has(worker) && !recovered.has(worker)) {
          recovered.set(worker, startedAt);
          log(
            `[${t(startedAt)}] ${pad(worker)} serves again (${formatDuration(startedAt - resumedAt)} after the store resumed)`,
          );
        }
      }
    });
    pausedAt = Date.now();
    backend.proxy.pause();
    await systemClock.sleep(pauseMs, options.signal);
    resumedAt = Date.now();
    backend.proxy.pass();
    log(`[${t()}] store resumed`);
    await f.waitFor(
      () => until(recovered.size === refusing.size && refusing.size > 0),
      30_000,
      'workers to recover',
    );
    await systemClock.sleep(300, options.signal);
    unsub2();
    await f.stop();

    const state = await readConfig(store, name);
    const report = checkVersionHistory(f.tasks, state.versions);
    const unverifiable = f.tasks.filter(
      (x) => x.version !== null && x.startedAt > pausedAt + policy.maxStalenessMs && x.startedAt < resumedAt,
    ).length;
    const refusedDuringPause = f.tasks.filter((x) => x.version === null && x.startedAt >= pausedAt).length;
    log('');
    log('result:');
    log(`  tasks recorded: ${report.tasks} (${report.ran} ran, ${report.refused} refused)`);
    log(
      `  workers that refused while the store was paused: ${refusing.size}/${workers}; recovered: ${recovered.size}/${workers}`,
    );
    const slowestRecoveryMs = Math.max(...[...recovered.values()].map((at) => at - resumedAt));
    log(`  slowest recovery after the store resumed: ${formatDuration(slowestRecoveryMs)}`);
    log(`  tasks that ran later than maxStaleness into the pause: ${unverifiable}`);
    log(
      `  tasks that used the wrong version (checked against the final timeline): ${report.violations.length}`,
    );
    return {
      activateAt: v2.activateAt,
      wrongVersion: report.violations.length,
      tasks: report.tasks,
      refusedDuringPause,
      ranWhileUnverifiable: unverifiable,
      workersRefusing: refusing.size,
      workersRecovered: recovered.size,
      slowestRecoveryMs,
    };
  } finally {
    await fleet?.stop();
    await store.close();
    await backend.close();
  }
}

/** `pingpong`, or `pingpong-2`… when an earlier demo left one in a user's store. */
async function freshName(store: Awaited<ReturnType<typeof openStore>>): Promise<string> {
  for (let i = 1; ; i++) {
    const name = i === 1 ? NAME : `${NAME}-${i}`;
    const r = await store.range(`/muster/config/${name}/`, { countOnly: true });
    if (r.count === 0) return name;
  }
}

function fmtLate(ms: number): string {
  return `${ms >= 0 ? '+' : ''}${ms.toFixed(1)} ms`;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? NaN;
}
