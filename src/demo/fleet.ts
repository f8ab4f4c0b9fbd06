/**
 * The parent side of the configuration worker fleet: spawns worker processes, collects what they
 * report (tasks, versions received, switches) and stops them. Used by `muster demo`, the
 * multi-process tests and `npm run bench -- config`.
 */
import type { TaskRecord } from '../config/internal.js';
import { MusterError } from '../errors.js';
import { type ProcessHandle, spawnProcess } from '../process/index.js';
import type { WorkerMessage } from './config-worker.js';

export interface FleetOptions {
  /** Store URL the workers connect to. */
  store: string;
  /** Configuration name. */
  config: string;
  workers: number;
  /** Mean interval between a worker's tasks, ms; 0: no tasks. Default 20. */
  taskIntervalMs?: number;
  /** How often workers send their task reports, ms. Default 100. */
  flushMs?: number;
  /** The workers' `switchWait` (see OpenConfigOptions). Default 0. */
  switchWaitMs?: number;
  /** How long to wait for every worker to be ready. Default 30 s. */
  readyTimeoutMs?: number;
  /** Relay socket the workers read through instead of the store (see ConfigRelay). */
  relay?: string;
  /** Per-worker store URL (e.g. through its own fault proxy); default: `store`. */
  storeFor?: (index: number) => string;
}

/** A version receipt or switch as one worker reported it. */
export interface WorkerEvent {
  readonly worker: string;
  readonly version: number;
  readonly activateAt: number;
  /** Worker's wall clock when it happened (sub-ms). */
  readonly at: number;
}

/** 5 s: a worker answers 'stop' in milliseconds; one that does not is SIGKILLed with its group. */
export const STOP_TIMEOUT_MS = 5000;

export type FleetListener = (worker: string, message: WorkerMessage) => void;

export class Fleet {
  readonly names: readonly string[];
  readonly tasks: TaskRecord[] = [];
  readonly received: WorkerEvent[] = [];
  readonly switches: (WorkerEvent & { readonly latenessMs: number })[] = [];
  /** Per task that ran: when it started and the newest version its worker held then. */
  readonly held: { readonly worker: string; readonly startedAt: number; readonly newest: number }[] = [];
  /** Workers that read a relay's shared table (from their `ready`). */
  tableReaders = 0;
  readonly #children: ProcessHandle[] = [];
  readonly #listeners = new Set<FleetListener>();
  #ready = 0;
  #failure: Error | undefined;

  private constructor(names: readonly string[]) {
    this.names = names;
  }

  /** Spawns the workers and waits until every one holds a verified configuration (30 s at most). */
  static async start(options: FleetOptions): Promise<Fleet> {
    const names = Array.from({ length: options.workers }, (_, i) => `worker_${i + 1}`);
    const fleet = new Fleet(names);
    const script = new URL('./config-worker.js', import.meta.url).pathname;
    try {
      for (const [i, name] of names.entries()) {
        const child = await spawnProcess({
          command: [process.execPath, ...process.execArgv, script],
          label: name,
          env: {
            MUSTER_STORE: options.storeFor?.(i) ?? options.store,
            MUSTER_CONFIG: options.config,
            MUSTER_WORKER: name,
            MUSTER_TASK_INTERVAL_MS: String(options.taskIntervalMs ?? 20),
            MUSTER_RELAY: options.relay ?? '',
            MUSTER_SWITCH_WAIT_MS: String(options.switchWaitMs ?? 0),
            MUSTER_FLUSH_MS: String(options.flushMs ?? 100),
          },
          stdout: 'inherit',
          stderr: 'inherit',
          ipc: 'advanced',
          onMessage: (m) => fleet.#onMessage(name, m as WorkerMessage),
        });
        fleet.#children.push(child);
      }
    } catch (err) {
      await fleet.stop();
      throw err;
    }
    try {
      await fleet.waitFor(
        () => fleet.#ready === names.length,
        options.readyTimeoutMs ?? 30_000,
        'every worker to be ready',
      );
    } catch (err) {
      await fleet.stop();
      throw err;
    }
    return fleet;
  }

  /** Process ids of the workers still running. */
  get pids(): number[] {
    return this.#children.flatMap((c) => (c.exit === undefined ? [c.pid] : []));
  }

  /** Calls `fn` for every message from every worker. */
  onMessage(fn: FleetListener): () => void {
    this.#listeners.add(fn);
    return () => this.#listeners.delete(fn);
  }

  #onMessage(worker: string, m: WorkerMessage): void {
    switch (m.t) {
      case 'batch':
        for (const one of m.messages) this.#onMessage(worker, one);
        return;
      case 'ready':
        this.#ready++;
        if (m.tables === true) this.tableReaders++;
        break;
      case 'tasks':
        for (const [startedAt, version, , newest] of m.tasks) {
          this.tasks.push({ worker, startedAt, version });
          if (newest !== undefined) this.held.push({ worker, startedAt, newest });
        }
        break;
      case 'version':
        if (!m.cancelled)
          this.received.push({ worker, version: m.version, activateAt: m.activateAt, at: m.at });
        break;
      case 'switch':
        this.switches.push({
          worker,
          version: m.version,
          activateAt: m.activateAt,
          at: m.at,
          latenessMs: m.latenessMs,
        });
        break;
      case 'error':
        this.#failure = new Error(`${worker} failed: ${m.message}`);
        break;
    }
    for (const fn of this.#listeners) fn(worker, m);
  }

  /** Polls `cond` every 20 ms; rejects with `MUSTER_TIMEOUT` after `timeoutMs` or on a worker failure. */
  async waitFor(cond: () => boolean, timeoutMs: number, what: string): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!cond()) {
      if (this.#failure !== undefined) throw this.#failure;
      if (Date.now() > deadline) throw new MusterError('MUSTER_TIMEOUT', `timed out waiting for ${what}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  /** Asks every worker to stop, waits for them (their groups SIGKILLed after 5 s); idempotent. */
  async stop(): Promise<void> {
    for (const c of this.#children) {
      // A worker may be exiting already: its channel is closed, which is fine.
      if (c.exit === undefined) c.send('stop').catch(() => undefined);
    }
    const timer = setTimeout(() => {
      for (const c of this.#children) void c.kill();
    }, STOP_TIMEOUT_MS);
    await Promise.all(this.#children.map((c) => c.gone));
    clearTimeout(timer);
  }
}
