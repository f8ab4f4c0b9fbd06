/**
 * The proxy master: owns the listening sockets and runs N worker processes that accept on them
 * (Node IPC handle passing). The sockets are bound and listened on by the workers, never accepted
 * by the master, and never closed while the master lives, so a connection that arrives while no
 * worker accepts waits in the kernel's backlog instead of being refused.
 *
 * Reload (`muster proxy reload`, SIGHUP): the new configuration is validated; a new generation of
 * workers is forked (new code and configuration), each is handed the sockets and reports `ready`
 * once it accepts; only then are the old workers told to drain (stop accepting, answer what is in
 * flight or held, close idle keep-alive connections at their advertised timeout), and they exit.
 * A worker that dies unasked is replaced. States of a worker: starting → ready → draining → exited.
 */
import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import * as net from 'node:net';
import { AggregatorRegistry, Counter, Gauge, Registry } from 'prom-client';
import { MusterError } from '../errors.js';
import { loadProxyConfig, type ProxyConfig } from './config.js';
import type { FromWorker, ListenerKind, ToWorker, WorkerMethod } from './ipc.js';
import { onAbort } from '../util/abort.js';
import type { ProxyLogger } from './server.js';
import { splitHostPort } from './server.js';
import { spawnProcess, type ProcessHandle } from '../process/index.js';
import { fileURLToPath } from 'node:url';

/** The compiled worker entry next to this module. */
const WORKER_MAIN = fileURLToPath(new URL('./worker-main.js', import.meta.url));

/** 30 s for a new worker to read the routing state and accept; past it the reload is refused. */
export const DEFAULT_WORKER_READY_TIMEOUT_MS = 30_000;
/** 5 s for a worker to answer an admin call. */
const CALL_TIMEOUT_MS = 5_000;

export interface ProxyMasterOptions {
  readonly configFile: string;
  /** Overrides the file's `store`. */
  readonly storeUrl?: string | undefined;
  /** Overrides the file's `listen` (e.g. `['fd:3']` for systemd socket activation), on start and reload. */
  readonly listen?: readonly string[] | undefined;
  /** Overrides the file's `workers`. */
  readonly workers?: number | undefined;
  readonly log: ProxyLogger;
  /** Where the master's own metrics (reloads, workers) go, e.g. the daemon's registry. Default: a new one. */
  readonly registry?: Registry;
  readonly readyTimeoutMs?: number;
}

type WorkerState = 'starting' | 'ready' | 'draining' | 'exited';

interface Worker {
  readonly pid: number;
  readonly generation: number;
  readonly startedAt: number;
  state: WorkerState;
  readonly child: ProcessHandle;
  readonly exited: Promise<void>;
  readonly calls: Map<number, (m: FromWorker & { type: 'result' }) => void>;
  ready: Promise<readonly string[]>;
}

interface Listener {
  readonly kind: ListenerKind;
  readonly address: string;
  readonly handle: { close(): void; getsockname(out: Record<string, unknown>): number };
  readonly bound: string;
}

export class ProxyMaster {
  readonly #options: ProxyMasterOptions;
  readonly #log: ProxyLogger;
  readonly #registry: Registry;
  readonly #reloads: Counter;
  #config: ProxyConfig;
  #listeners: Listener[] = [];
  #workers: Worker[] = [];
  readonly #all = new Set<Worker>();
  #generation = 0;
  #reloading: Promise<unknown> = Promise.resolve();
  #stopping: Promise<void> | undefined;
  #callId = 0;
  #crashes = 0;

  private constructor(options: ProxyMasterOptions, config: ProxyConfig) {
    this.#options = options;
    this.#log = options.log;
    this.#config = config;
    this.#registry = options.registry ?? new Registry();
    this.#reloads = new Counter({
      name: 'muster_proxy_reloads_total',
      help: 'Reloads completed (new workers accepting, old ones draining)',
      registers: [this.#registry],
    });
    const all = this.#all;
    new Gauge({
      name: 'muster_proxy_workers',
      help: 'Worker processes by state',
      labelNames: ['state'] as const,
      registers: [this.#registry],
      collect() {
        this.reset();
        for (const w of all) this.inc({ state: w.state });
      },
    });
  }

  /** Validates the configuration, binds the sockets, starts the workers and the admin API. */
  static async start(options: ProxyMasterOptions): Promise<ProxyMaster> {
    const config = loadProxyConfig(options.configFile);
    const master = new ProxyMaster(options, config);
    try {
      master.#listeners = await master.#bindAll(config, []);
      const workers = await master.#startGeneration(config);
      master.#workers = workers;
      master.#log.info(
        { listen: master.addresses, workers: workers.map((w) => w.pid) },
        'proxy master started',
      );
      return master;
    } catch (err) {
      await master.stop();
      throw err;
    }
  }

  /** `host:port` per listening socket. */
  get addresses(): string[] {
    return this.#listeners.filter((l) => l.kind === 'http').map((l) => l.bound);
  }

  /** `host:port` per line-protocol listening socket (`lines.listen`). */
  get lineAddresses(): string[] {
    return this.#listeners.filter((l) => l.kind === 'lines').map((l) => l.bound);
  }

  get workerPids(): number[] {
    return this.#workers.map((w) => w.pid);
  }

  /**
   * Starts a new generation with the file's current configuration and drains the old one once the
   * new one accepts. Reloads run one at a time.
   * @throws MusterError `MUSTER_INVALID_ARGUMENT` (bad file: nothing changes) or `MUSTER_UNAVAILABLE`
   *   (new workers did not become ready: they are stopped and the old ones keep serving).
   */
  reload(): Promise<{ generation: number; workers: number[] }> {
    const run = this.#reloading.then(async () => {
      if (this.#stopping) throw new MusterError('MUSTER_CLOSED', 'the proxy is stopping');
      const config = loadProxyConfig(this.#options.configFile);
      const listeners = await this.#bindAll(config, this.#listeners);
      const old = this.#workers;
      const fresh = await this.#startGeneration(config, listeners).catch((err: unknown) => {
        for (const l of listeners) if (!this.#listeners.includes(l)) l.handle.close();
        throw err;
      });
      const retired = this.#listeners.filter((l) => !listeners.includes(l));
      this.#config = config;
      this.#listeners = listeners;
      this.#workers = fresh;
      for (const w of old) this.#drain(w);
      void Promise.all(old.map((w) => w.exited)).then(() => {
        for (const l of retired) l.handle.close();
      });
      this.#reloads.inc();
      this.#log.info(
        { generation: this.#generation, workers: fresh.map((w) => w.pid), old: old.map((w) => w.pid) },
        'reloaded',
      );
      return { generation: this.#generation, workers: fresh.map((w) => w.pid) };
    });
    this.#reloading = run.catch(() => undefined);
    return run;
  }

  /**
   * Drains every worker (up to the drain timeout, or until `force` aborts: then they are killed),
   * then closes the sockets. Idempotent.
   */
  stop(force?: AbortSignal): Promise<void> {
    this.#stopping ??= (async () => {
      await this.#reloading;
      const all = [...this.#all];
      for (const w of all) this.#drain(w);
      const limit = this.#config.drainTimeoutMs + 5000;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, limit);
        timer.unref();
        const done = (): void => {
          clearTimeout(timer);
          resolve();
        };
        const off = onAbort(force, done);
        void Promise.all(all.map((w) => w.exited)).then(() => {
          off();
          done();
        });
      });
      for (const w of this.#all) void w.child.kill();
      await Promise.all([...this.#all].map((w) => w.exited));
      for (const l of this.#listeners) l.handle.close();
      this.#log.info({}, 'proxy master stopped');
    })();
    return this.#stopping;
  }

  /** Where `key` goes now and why, as a ready worker's routing table says. */
  explain(key: string): Promise<unknown> {
    return this.#call(this.#readyWorker(), 'explain', key);
  }

  /** What the master knows without asking the workers (the daemon's `/v1/status`). */
  summary(): Record<string, unknown> {
    return {
      config: this.#options.configFile,
      service: this.#config.service,
      generation: this.#generation,
      listen: this.addresses,
      lines: this.lineAddresses,
      workers: [...this.#all].map((w) => ({ pid: w.pid, generation: w.generation, state: w.state })),
    };
  }

  async status(): Promise<unknown> {
    const workers = await Promise.all(
      [...this.#all].map(async (w) => ({
        ...((await this.#call(w, 'status').catch((err: unknown) => ({
          error: (err as Error).message,
        }))) as object),
        pid: w.pid,
        generation: w.generation,
        state: w.state,
      })),
    );
    return {
      ...this.summary(),
      pid: process.pid,
      reloads: (await this.#reloads.get()).values[0]?.value ?? 0,
      workers,
    };
  }

  async held(): Promise<unknown> {
    const total: Record<string, number> = {};
    const byWorker: Record<string, unknown> = {};
    for (const w of this.#all) {
      const h = (await this.#call(w, 'held').catch(() => ({}))) as Record<string, number>;
      byWorker[String(w.pid)] = h;
      for (const [d, n] of Object.entries(h)) total[d] = (total[d] ?? 0) + n;
    }
    return { total, byWorker };
  }

  async metrics(): Promise<{ contentType: string; text: string }> {
    const parts: object[][] = [await this.#registry.getMetricsAsJSON()];
    for (const w of this.#all) {
      const m = await this.#call(w, 'metrics').catch(() => undefined);
      if (Array.isArray(m)) parts.push(m as object[]);
    }
    const merged = AggregatorRegistry.aggregate(parts);
    return { contentType: merged.contentType, text: await merged.metrics() };
  }

  #readyWorker(): Worker {
    const w = this.#workers.find((x) => x.state === 'ready');
    if (w === undefined) throw new MusterError('MUSTER_UNAVAILABLE', 'no worker is ready');
    return w;
  }

  /** The HTTP sockets (`listen`, or `--listen-fd`) and the line-protocol ones (`lines.listen`). */
  async #bindAll(config: ProxyConfig, existing: readonly Listener[]): Promise<Listener[]> {
    const http = await this.#bind(this.#options.listen ?? config.listen, existing, 'http');
    try {
      return [...http, ...(await this.#bind(config.lines?.listen ?? [], existing, 'lines'))];
    } catch (err) {
      for (const l of http) if (!existing.includes(l)) l.handle.close();
      throw err;
    }
  }

  async #bind(
    addresses: readonly string[],
    existing: readonly Listener[],
    kind: ListenerKind,
  ): Promise<Listener[]> {
    const out: Listener[] = [];
    for (const address of addresses) {
      const kept = existing.find((l) => l.address === address && l.kind === kind);
      if (kept !== undefined) {
        out.push(kept);
        continue;
      }
      const create = (net as unknown as { _createServerHandle: (...a: unknown[]) => unknown })
        ._createServerHandle;
      const fd = /^fd:(\d+)$/.exec(address);
      if (fd !== null) {
        // an inherited socket (systemd socket activation: LISTEN_FDS, first at fd 3)
        const handle = create(null, null, null, Number(fd[1]), 0);
        if (typeof handle === 'number') {
          for (const l of out) if (!existing.includes(l)) l.handle.close();
          throw new MusterError('MUSTER_INVALID_ARGUMENT', `cannot use ${address}: errno ${handle}`, {
            details: { address },
          });
        }
        const h = handle as Listener['handle'];
        const name: Record<string, unknown> = {};
        h.getsockname(name);
        const a = String(name['address']);
        out.push({
          kind,
          address,
          handle: h,
          bound: `${a.includes(':') ? `[${a}]` : a}:${String(name['port'])}`,
        });
        continue;
      }
      const { host, port } = splitHostPort(address);
      const ip = isIP(host) ? host : (await lookup(host)).address;
      // bind without listen: the workers listen on (and accept from) this very socket
      const handle = create(ip, port, isIP(ip), undefined, 0);
      if (typeof handle === 'number') {
        for (const l of out) if (!existing.includes(l)) l.handle.close();
        const code = handle === -98 ? 'MUSTER_ADDRESS_IN_USE' : 'MUSTER_INVALID_ARGUMENT';
        throw new MusterError(code, `cannot listen on ${address}: errno ${handle}`, { details: { address } });
      }
      const h = handle as Listener['handle'];
      const name: Record<string, unknown> = {};
      h.getsockname(name);
      const bound = `${isIP(ip) === 6 ? `[${ip}]` : ip}:${String(name['port'])}`;
      out.push({ kind, address, handle: h, bound });
    }
    return out;
  }

  async #startGeneration(config: ProxyConfig, listeners = this.#listeners): Promise<Worker[]> {
    const generation = ++this.#generation;
    const n = this.#options.workers ?? config.workers;
    const spawned = await Promise.allSettled(
      Array.from({ length: n }, () => this.#spawn(generation, listeners)),
    );
    const workers = spawned.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
    try {
      for (const r of spawned) if (r.status === 'rejected') throw r.reason;
      await Promise.all(workers.map((w) => w.ready));
      return workers;
    } catch (err) {
      await Promise.all(workers.map((w) => w.child.kill()));
      await Promise.all(workers.map((w) => w.exited));
      throw err;
    }
  }

  /** Starts one worker through the process kernel, hands it the sockets and its configuration. */
  async #spawn(generation: number, listeners: readonly Listener[]): Promise<Worker> {
    let onMessage: (m: FromWorker) => void = () => undefined;
    const child = await spawnProcess({
      // as child_process.fork does: the same Node, with this process's flags (e.g. --cpu-prof)
      command: [process.execPath, ...process.execArgv, WORKER_MAIN],
      label: `proxy-worker/g${generation}`,
      // Workers share one listening socket and all wake on a new connection; libuv's default accepts
      // in a loop until EAGAIN, so the first awake worker takes a whole burst (measured: 100
      // connections opened at once went ~82/0 over 2 workers). One accept per wake-up spreads them,
      // as the cluster module's round-robin does, without routing connections through the master.
      env: { UV_TCP_SINGLE_ACCEPT: process.env['UV_TCP_SINGLE_ACCEPT'] ?? '1' },
      ipc: 'advanced',
      onMessage: (m) => onMessage(m as FromWorker),
      stdout: 'inherit',
      stderr: 'inherit',
      // the master drains a worker by message and waits for it (drainTimeout); a signal only on stop
      grace: this.#config.drainTimeoutMs + 5000,
    });
    const pid = child.pid;
    const exited = child.exited.then(({ code, signal }) => {
      const unasked = worker.state !== 'draining';
      worker.state = 'exited';
      this.#all.delete(worker);
      for (const done of worker.calls.values()) done({ type: 'result', id: -1, error: 'worker exited' });
      if (unasked && this.#stopping === undefined && this.#workers.includes(worker))
        this.#replace(worker, code, signal);
    });
    const worker: Worker = {
      pid,
      generation,
      startedAt: Date.now(),
      state: 'starting',
      child,
      exited,
      calls: new Map(),
      ready: Promise.resolve([]),
    };
    this.#all.add(worker);
    worker.ready = new Promise<readonly string[]>((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new MusterError('MUSTER_UNAVAILABLE', `worker ${pid} did not become ready in time`));
      }, this.#options.readyTimeoutMs ?? DEFAULT_WORKER_READY_TIMEOUT_MS);
      onMessage = (m) => {
        if (m.type === 'ready') {
          clearTimeout(timer);
          if (worker.state === 'starting') worker.state = 'ready';
          resolve(m.addresses);
        } else if (m.type === 'failed') {
          clearTimeout(timer);
          reject(new MusterError('MUSTER_UNAVAILABLE', `worker ${pid} failed to start: ${m.error.message}`));
        } else if (m.type === 'result') {
          worker.calls.get(m.id)?.(m);
        }
      };
      void exited.then(() => {
        clearTimeout(timer);
        reject(new MusterError('MUSTER_UNAVAILABLE', `worker ${pid} exited before it was ready`));
      });
    });
    worker.ready.catch(() => undefined);
    for (const kind of ['http', 'lines'] as const)
      listeners
        .filter((l) => l.kind === kind)
        .forEach((l, index) => this.#send(worker, { type: 'listen', index, kind }, l.handle));
    this.#send(worker, {
      type: 'start',
      configFile: this.#options.configFile,
      storeUrl: this.#options.storeUrl,
      generation,
    });
    return worker;
  }

  /** A worker died unasked: start another of the same generation (after a pause if it died young). */
  #replace(dead: Worker, code: number | null, signal: NodeJS.Signals | null): void {
    const young = Date.now() - dead.startedAt < 5000;
    this.#crashes = young ? this.#crashes + 1 : 0;
    const delay = young ? Math.min(10_000, 250 * 2 ** Math.min(this.#crashes, 6)) : 0;
    this.#log.warn(
      { pid: dead.pid, code, signal, restartInMs: delay },
      'worker exited unasked; replacing it',
    );
    setTimeout(() => {
      if (this.#stopping !== undefined || !this.#workers.includes(dead)) return;
      this.#spawn(dead.generation, this.#listeners).then(
        (w) => {
          this.#workers = this.#workers.map((x) => (x === dead ? w : x));
          w.ready.catch((err: unknown) => this.#log.error({ err }, 'replacement worker failed'));
        },
        (err: unknown) => this.#log.error({ err }, 'replacement worker failed to start'),
      );
    }, delay).unref();
  }

  #drain(w: Worker): void {
    if (w.state === 'draining' || w.state === 'exited') return;
    w.state = 'draining';
    this.#send(w, { type: 'drain', timeoutMs: this.#config.drainTimeoutMs });
  }

  #send(w: Worker, message: ToWorker, handle?: object): void {
    if (w.state === 'exited') return;
    w.child.send(message, handle).catch((err: unknown) => {
      this.#log.warn({ err, pid: w.pid, message: message.type }, 'could not message a worker');
    });
  }

  #call(w: Worker, method: WorkerMethod, arg?: string): Promise<unknown> {
    const id = ++this.#callId;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        w.calls.delete(id);
        reject(new MusterError('MUSTER_TIMEOUT', `worker ${w.pid} did not answer ${method}`));
      }, CALL_TIMEOUT_MS);
      w.calls.set(id, (m) => {
        clearTimeout(timer);
        w.calls.delete(id);
        if (m.error !== undefined) reject(new Error(m.error));
        else resolve(m.value);
      });
      this.#send(w, { type: 'call', id, method, ...(arg === undefined ? {} : { arg }) });
    });
  }
}
