/**
 * The agent: joinPartitioned + the process kernel + the daemon runtime + an API (brief §7).
 *
 * Start-up order: sweep the process registry of a previous run (no child of a dead agent survives
 * into this one) → open the store → host the config relay → join the service; each acquired
 * partition gets a {@link Supervisor} whose `run()` is what `onAcquire` returns, so the owner key is
 * deleted only after the child's group is gone. A watchdog stops every child before the session's
 * validity deadline when renewals stop.
 */
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { ConfigHandle, ConfigRelay } from '../config/index.js';
import { isMusterError, MusterError } from '../errors.js';
import { isHealthy, serviceKeys } from '../membership/index.js';
import {
  joinPartitioned,
  type AcquireContext,
  type PartitionedHandle,
  publishSpec,
  readPartitionStatus,
} from '../partitions/index.js';
import { jsonBytes, jsonOf } from '../store/index.js';
import { onAbort } from '../util/abort.js';
import { openStore } from '../store/index.js';
import type { Store } from '../store/index.js';
import { loadAgentConfig, type AgentConfig, type RunConfig } from './config.js';
import { discardSpare, ProcessRegistry } from './kernel.js';
import { AgentMetrics } from './metrics.js';
import type { DaemonContext } from './runtime.js';
import { type PartitionRow, Supervisor } from './supervisor.js';

/**
 * 1 s: the agent's status record is written this long after the first change since its last write.
 * A crash loop cannot flood the store (one write a second at most), and the writes stay out of a
 * hand-off, which is over in a few hundred milliseconds: they share etcd's one apply loop, and its
 * fsyncs, with the hand-off's own writes (with a write every 250 ms while things changed, each agent
 * taking over a partition wrote its record once or twice within the hand-off).
 */
export const STATUS_RECORD_INTERVAL_MS = 1000;

/** 4,000 characters: a hand-off note within membership's 4,096-character limit for a note. */
export const NOTE_MAX_CHARS = 4000;

/** What `status/<s>/agents/<id>` holds (leased with the instance's session). */
export interface AgentRecord {
  readonly instance: string;
  readonly pid: number;
  readonly api: string;
  readonly updatedAt: string;
  readonly partitions: Readonly<Record<string, Omit<PartitionRow, 'partition'>>>;
  /** Partitions this agent handed on after its restart budget was spent (or a check said release). */
  readonly handedOff: Readonly<Record<string, { reason: string; to: string; at: string }>>;
}

/** A pin the agent writes to move a failing partition: the pin record plus who wrote it and why. */
export interface AgentPin {
  readonly instance: string;
  readonly by: string;
  readonly reason: string;
  readonly at: string;
  /** Instances that already failed with this partition (never pinned to again). */
  readonly tried: readonly string[];
}

export interface AgentOptions {
  /** The API bearer token children get as `MUSTER_API_TOKEN`. */
  token: string;
  /** A store to use instead of opening `config.store` (tests). The agent does not close it. */
  store?: Store;
}

/** A running agent inside a daemon. */
export class Agent {
  readonly ctx: DaemonContext;
  readonly registry: ProcessRegistry;
  readonly metrics: AgentMetrics;
  readonly #store: Store;
  readonly #ownsStore: boolean;
  readonly #token: string;
  readonly #sups = new Map<string, Supervisor>();
  readonly #configs = new Map<string, ConfigHandle>();
  readonly #handedOff = new Map<string, { reason: string; to: string; at: string }>();
  #config: AgentConfig;
  #handle!: PartitionedHandle;
  #relay: ConfigRelay | undefined;
  #relayAddress: string | undefined;
  #deadline: (() => number) | undefined;
  #watchdog: NodeJS.Timeout | undefined;
  #held = false;
  #recordTimer: NodeJS.Timeout | undefined;
  #closing: Promise<void> | undefined;

  private constructor(
    ctx: DaemonContext,
    config: AgentConfig,
    store: Store,
    ownsStore: boolean,
    registry: ProcessRegistry,
    token: string,
  ) {
    this.#token = token;
    this.ctx = ctx;
    this.#config = config;
    this.#store = store;
    this.#ownsStore = ownsStore;
    this.registry = registry;
    this.metrics = new AgentMetrics(ctx.metrics, this);
  }

  get log(): Logger {
    return this.ctx.log;
  }
  get config(): AgentConfig {
    return this.#config;
  }
  /** The store the agent works on (the dashboard watches it). */
  get store(): Store {
    return this.#store;
  }

  get id(): string {
    return this.#handle.id;
  }
  get handle(): PartitionedHandle {
    return this.#handle;
  }
  get supervisors(): ReadonlyMap<string, Supervisor> {
    return this.#sups;
  }
  get relayAddress(): string | undefined {
    return this.#relayAddress;
  }
  configHandle(name: string): ConfigHandle | undefined {
    return this.#configs.get(name);
  }
  /** Milliseconds until the session's validity deadline (undefined without an owned partition). */
  deadlineMarginMs(): number | undefined {
    return this.#deadline === undefined ? undefined : this.#deadline() - performance.now();
  }

  /** Starts an agent in a daemon context. Throws the store's errors, `MUSTER_DUPLICATE_INSTANCE`. */
  static async start(ctx: DaemonContext, config: AgentConfig, options: AgentOptions): Promise<Agent> {
    // 1. No child of a previous run survives into this one: kill what the registry recorded.
    const registry = new ProcessRegistry(join(config.stateDir, 'children', config.service));
    const swept = await registry.sweep();
    if (swept.killed > 0) ctx.log.warn(swept, 'killed child groups left by a previous agent run');
    const store = options.store ?? (await openStore(config.store));
    const agent = new Agent(ctx, config, store, options.store === undefined, registry, options.token);
    try {
      await agent.#start();
    } catch (err) {
      await agent.close();
      throw err;
    }
    return agent;
  }

  async #start(): Promise<void> {
    const c = this.#config;
    // The config capability (~0.1 MB of module source: the relay's server side, the publisher, the
    // model) is loaded only by an agent that hosts a relay or opens a configuration (docs/agent.md,
    // "Memory").
    const config = c.relay !== false || c.config.length > 0 ? await import('../config/index.js') : undefined;
    if (c.relay !== false && config !== undefined) {
      try {
        this.#relay = await config.ConfigRelay.start({
          store: this.#store,
          listen: c.relay.listen,
          ...(c.relay.maxStalenessMs !== undefined ? { maxStaleness: c.relay.maxStalenessMs } : {}),
        });
        this.#relayAddress = this.#relay.address;
      } catch (err) {
        if (!isMusterError(err, 'MUSTER_ADDRESS_IN_USE')) throw err;
        this.#relayAddress = c.relay.listen; // the host's relay is already running: children use it
        this.log.info({ relay: c.relay.listen }, 'a config relay already serves this host; using it');
      }
    }
    if (config !== undefined)
      for (const name of c.config) this.#configs.set(name, config.openConfig(this.#store, name));
    this.#handle = await joinPartitioned(this.#store, {
      service: c.service,
      ...(c.partitions !== undefined ? { partitions: c.partitions } : {}),
      ...(c.instance.id !== undefined ? { id: c.instance.id } : {}),
      ...(c.root !== undefined ? { root: c.root } : {}),
      weight: c.instance.weight,
      ...(c.instance.tags.length > 0 ? { tags: c.instance.tags } : {}),
      ttl: c.ttlMs,
      // The library waits this long for a child to stop before it complains (and keeps waiting).
      stopTimeout: c.run.graceMs + 5000,
      ...(c.maxConcurrentMoves !== undefined ? { maxConcurrentMoves: c.maxConcurrentMoves } : {}),
      logger: this.log,
      onAcquire: (partition, context) => this.#onAcquire(partition, context),
    });
    this.#handle.on('error', (err) => this.log.warn({ err: String(err) }, 'partitions'));
    this.#handle.on('acquired', (p, token) => {
      this.metrics.handoff('acquired');
      this.log.info({ partition: p, token }, 'partition acquired');
    });
    this.#handle.on('released', (p, token) => {
      this.metrics.handoff('released');
      this.log.info({ partition: p, token }, 'partition released');
    });
    this.#handle.on('lost', (p, token, cause) => {
      this.metrics.handoff('lost');
      this.log.warn({ partition: p, token, cause }, 'partition lost');
    });
    // For `muster agent reload` and operators: where this agent's API is.
    mkdirSync(c.stateDir, { recursive: true, mode: 0o700 });
    writeFileSync(
      agentRunFile(c),
      JSON.stringify({ pid: process.pid, api: this.ctx.admin.url, instance: this.#handle.id }),
    );
    this.#armWatchdog(0);
    this.#recordChanged();
  }

  async #onAcquire(partition: string, context: AcquireContext): Promise<Uint8Array | undefined> {
    this.#deadline = () => context.deadline();
    const handoff = this.#handoffFiles(partition, context);
    const sup = new Supervisor(partition, context, {
      config: () => this.#config,
      instance: this.#handle?.id ?? '',
      apiUrl: this.ctx.admin.url,
      apiToken: this.#token,
      relay: this.#relayAddress,
      registry: this.registry,
      log: this.log,
      runFor: (p) => runFor(this.#config, p),
      handOff: (p, reason) => this.#handOff(p, reason),
      changed: (s) => {
        this.#recordChanged();
        this.metrics.changed(s);
      },
      stopMarginMs: this.#config.stopMarginMs,
      monotonic: () => performance.now(),
      handoff,
    });
    this.#sups.set(partition, sup);
    if (this.#handedOff.delete(partition)) this.#publishNotes();
    const started = performance.now();
    const offRelease = onAbort(context.signal, () =>
      this.metrics.releaseStarted(partition, performance.now()),
    );
    try {
      await sup.run();
      // The child has exited on the stop signal: what it wrote is the state for the next owner (the
      // library hands it over only on a graceful release). Synchronous, as #handoffFiles: small
      // local files, and each asynchronous call was a thread-pool round trip between the child's
      // exit and the release of its owner key (three in a row on every hand-off).
      const out = readIfExists(handoff.out);
      return out === undefined ? undefined : new Uint8Array(out);
    } finally {
      offRelease();
      removeQuietly(handoff.out);
      if (handoff.in !== undefined) removeQuietly(handoff.in);
      this.metrics.releaseDone(partition, performance.now() - started);
      if (this.#sups.get(partition) === sup) this.#sups.delete(partition);
      this.#recordChanged();
    }
  }

  /**
   * `<stateDir>/handoff/<service>-<partition>-<token>.{in,out}`: the previous owner's state (written
   * now, when there is one) and where the children write theirs before exiting on the stop signal.
   */
  #handoffFiles(partition: string, context: AcquireContext): { in?: string; out: string } {
    const dir = join(this.#config.stateDir, 'handoff');
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const base = join(dir, `${this.#config.service}-${partition}-${context.token}`);
    rmSync(`${base}.out`, { force: true });
    if (context.state === undefined) return { out: `${base}.out` };
    writeFileSync(`${base}.in`, context.state, { mode: 0o600 });
    return { in: `${base}.in`, out: `${base}.out` };
  }

  // ---- kill before the deadline ------------------------------------------------------------------

  /**
   * One timer, armed for the instant the session's deadline comes within `stopMargin`. When it fires
   * and no renewal moved the deadline, every child is stopped (grace capped to half the margin, then
   * SIGKILL of the group), so all are gone before the deadline — before the store can expire the
   * lease and another instance acquire. A late renewal releases the hold.
   */
  #armWatchdog(delayMs: number): void {
    if (this.#closing !== undefined) return;
    this.#watchdog = setTimeout(() => this.#checkDeadline(), Math.max(0, Math.min(delayMs, 1000)));
  }

  #checkDeadline(): void {
    const margin = this.deadlineMarginMs();
    const stop = this.#config.stopMarginMs;
    if (margin === undefined || this.#sups.size === 0) {
      this.#held = false;
      this.#armWatchdog(250);
      return;
    }
    if (margin < stop && !this.#held) {
      this.#held = true;
      const grace = Math.min(this.#config.run.graceMs, Math.floor(stop / 2));
      this.log.warn(
        { marginMs: Math.round(margin), graceMs: grace, children: this.#sups.size },
        'session not renewed: stopping every child before the validity deadline',
      );
      for (const s of this.#sups.values()) void s.hold(grace);
    } else if (margin >= stop && this.#held) {
      this.#held = false;
      this.log.info({ marginMs: Math.round(margin) }, 'session renewed: children may start again');
      for (const s of this.#sups.values()) s.unhold();
    }
    this.#armWatchdog(this.#held ? 50 : margin - stop);
  }

  // ---- hand-off after a spent budget -------------------------------------------------------------

  /**
   * Moves `partition` to another instance by pinning it there (placement honours pins first). The
   * pin records who wrote it, why, and every instance that already failed with it, so a partition
   * that fails everywhere stops moving (and stays `failed`, loudly) instead of circling.
   * Resolves to false when no other active, healthy instance is left to try.
   */
  async #handOff(partition: string, reason: string): Promise<boolean> {
    const keys = serviceKeys(this.#config.root, this.#config.service);
    const me = this.#handle.id;
    const pinKv = await this.#store.get(keys.pin(partition));
    let tried: string[] = [];
    if (pinKv !== undefined) {
      try {
        tried = [...(jsonOf<Partial<AgentPin>>(pinKv.value, pinKv.key).tried ?? [])];
      } catch {
        tried = [];
      }
    }
    tried = [...new Set([...tried, me])];
    const status = await readPartitionStatus(this.#store, this.#config.service, {
      ...(this.#config.root !== undefined ? { root: this.#config.root } : {}),
    });
    const target = status.instances
      .filter((i) => !tried.includes(i.id) && isHealthy(i))
      .sort((a, b) => a.owned / a.weight - b.owned / b.weight || (a.id < b.id ? -1 : 1))[0];
    if (target === undefined) {
      this.log.error(
        { partition, tried },
        'no other instance left to try this partition; keeping it here and retrying after the longest back-off',
      );
      this.#handedOff.set(partition, { reason, to: '', at: new Date().toISOString() });
      this.#recordChanged();
      this.#publishNotes();
      return false;
    }
    const pin: AgentPin = { instance: target.id, by: me, reason, at: new Date().toISOString(), tried };
    // Under this agent's session lease: the pin lasts while the agent that wrote it lives (its leave
    // revokes the lease, a crash lets it expire), so no pin outlives the reason it was written for.
    const lease = this.#handle.leaseId;
    if (lease === undefined) return false; // between sessions: the next failure tries again
    const r = await this.#store.txn(
      [{ key: keys.pin(partition), target: 'modRevision', op: '=', value: pinKv?.modRevision ?? 0 }],
      [{ type: 'put', key: keys.pin(partition), value: jsonBytes(pin), lease }],
    );
    if (!r.succeeded) return false;
    this.#handedOff.set(partition, { reason, to: target.id, at: pin.at });
    this.#recordChanged();
    this.#publishNotes();
    this.log.warn({ partition, to: target.id, reason }, 'partition handed to another instance (pinned)');
    return true;
  }

  /**
   * The instance record's notes, where operators look (`muster members`, the dashboard):
   * `handoff/<partition>` → to whom this agent handed the partition on, when, and why.
   */
  #publishNotes(): void {
    const notes = Object.fromEntries(
      [...this.#handedOff].map(([p, h]) => [
        `handoff/${p}`,
        `${h.to === '' ? 'kept: no other instance left to try' : `to ${h.to}`} at ${h.at}: ${h.reason}`.slice(
          0,
          NOTE_MAX_CHARS,
        ),
      ]),
    );
    this.#handle.setNotes(notes).catch((err: unknown) => {
      this.log.warn({ err: String(err) }, 'hand-off notes not published in the instance record');
    });
  }

  // ---- status record ------------------------------------------------------------------------------

  rows(): PartitionRow[] {
    return [...this.#sups.values()].map((s) => s.row()).sort((a, b) => (a.partition < b.partition ? -1 : 1));
  }

  record(): AgentRecord {
    return {
      instance: this.#handle?.id ?? '',
      pid: process.pid,
      api: this.ctx.admin.url,
      updatedAt: new Date().toISOString(),
      partitions: Object.fromEntries(this.rows().map(({ partition, ...rest }) => [partition, rest])),
      handedOff: Object.fromEntries(this.#handedOff),
    };
  }

  /** Plans a write of the status record {@link STATUS_RECORD_INTERVAL_MS} from now, unless one is planned. */
  #recordChanged(): void {
    if (this.#recordTimer !== undefined || this.#closing !== undefined) return;
    this.#recordTimer = setTimeout(() => {
      this.#recordTimer = undefined;
      void this.#writeRecord();
    }, STATUS_RECORD_INTERVAL_MS);
    this.#recordTimer.unref();
  }

  async #writeRecord(): Promise<void> {
    if (this.#closing !== undefined) return;
    const lease = this.#handle.leaseId;
    if (lease === undefined) {
      this.#recordChanged(); // between sessions: try again
      return;
    }
    const key = serviceKeys(this.#config.root, this.#config.service).agent(this.#handle.id);
    try {
      await this.#store.put(key, jsonBytes(this.record()), { lease });
    } catch (err) {
      this.#recordChanged();
      this.log.debug({ err: String(err) }, 'status record not written');
    }
  }

  status(): unknown {
    return {
      service: this.#config.service,
      instance: this.#handle?.id,
      state: this.#handle?.state,
      api: this.ctx.admin.url,
      relay: this.#relayAddress ?? null,
      sessionDeadlineMarginMs: this.deadlineMarginMs() ?? null,
      assigned: this.#handle?.assigned ?? [],
      partitions: this.rows(),
      handedOff: Object.fromEntries(this.#handedOff),
      configs: Object.fromEntries([...this.#configs].map(([n, h]) => [n, h.freshness()])),
    };
  }

  // ---- reload -------------------------------------------------------------------------------------

  /**
   * Re-reads the file: children whose settings changed are restarted, the others keep running; a new
   * partition set is written to the spec (partitions are handed over, not dropped). Fields that need a
   * new session (store, service, instance, session, api, relay, stateDir) are reported and ignored.
   * Throws `MUSTER_AGENT_CONFIG` (nothing changes) for a bad file.
   */
  async reload(file = this.#config.file): Promise<{ restarted: string[] }> {
    const next = loadAgentConfig(file);
    const fixed = [
      'store',
      'root',
      'service',
      'instance',
      'ttlMs',
      'api',
      'relay',
      'stateDir',
      'ui',
    ] as const;
    const ignored = fixed.filter((k) => JSON.stringify(next[k]) !== JSON.stringify(this.#config[k]));
    if (ignored.length > 0) {
      this.log.warn({ fields: ignored }, 'reload: these fields need an agent restart; ignored');
    }
    const before = new Map([...this.#sups].map(([p, s]) => [p, s.fingerprint]));
    const previous = this.#config;
    this.#config = {
      ...next,
      ...Object.fromEntries(fixed.map((k) => [k, this.#config[k]])),
    };
    if (
      next.partitions !== undefined &&
      JSON.stringify(next.partitions) !== JSON.stringify(previous.partitions)
    ) {
      // The seed's "Update Partitions": placement hands the difference over, nothing is dropped.
      await publishSpec(
        this.#store,
        serviceKeys(this.#config.root, this.#config.service),
        { partitions: next.partitions },
        this.log,
        this.#handle.id,
      );
    }
    const restarted: string[] = [];
    for (const [p, s] of this.#sups) {
      const was = before.get(p) ?? '';
      if (was !== '' && s.plannedFingerprint() !== was) {
        restarted.push(p);
        s.restart('configuration changed');
      }
    }
    this.log.info({ restarted }, 'reloaded');
    return { restarted };
  }

  /** SIGKILLs every child group at once (a forced stop); the partitions are released afterwards. */
  async killChildren(): Promise<void> {
    await Promise.all([...this.#sups.values()].map((s) => s.hold(0)));
  }

  // ---- shutdown -----------------------------------------------------------------------------------

  /** Graceful leave: every child stopped, every key released, then the store closed. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    if (this.#watchdog !== undefined) clearTimeout(this.#watchdog);
    if (this.#recordTimer !== undefined) clearTimeout(this.#recordTimer);
    const steps: (() => Promise<unknown>)[] = [
      async () => this.#handle?.leave(),
      // Every child is stopped: the one forked ahead for the next start goes too.
      () => discardSpare(),
      ...[...this.#configs.values()].map((h) => () => h.close()),
      async () => this.#relay?.close(),
      async () => (this.#ownsStore ? this.#store.close() : undefined),
    ];
    for (const step of steps) {
      try {
        await step();
      } catch (err) {
        this.log.warn({ err: String(err) }, 'close step failed');
      }
    }
  }
}

/** The file's bytes, or `undefined` when it does not exist (or cannot be read). */
function readIfExists(file: string): Buffer | undefined {
  try {
    return readFileSync(file);
  } catch {
    return undefined;
  }
}

/** Removes `file` if it exists; a failure is ignored (the next owner's token names other files). */
function removeQuietly(file: string): void {
  try {
    rmSync(file, { force: true });
  } catch {
    // ignored
  }
}

/** `<stateDir>/agent-<service>.json`: the running agent's pid and API address. */
export function agentRunFile(config: AgentConfig): string {
  return join(config.stateDir, `agent-${config.service}.json`);
}

/** The run settings of one partition: `run` with the partition's `overrides` merged in. */
export function runFor(config: AgentConfig, partition: string): RunConfig {
  const o = config.overrides[partition];
  if (o === undefined) return config.run;
  return { ...config.run, env: { ...config.run.env, ...o.env } };
}

/** Throws `MUSTER_NOT_FOUND` for a partition this agent does not run. */
export function supervisorOf(agent: Agent, partition: string): Supervisor {
  const s = agent.supervisors.get(partition);
  if (s === undefined) {
    throw new MusterError('MUSTER_NOT_FOUND', `this agent does not own partition '${partition}'`, {
      details: { partition },
    });
  }
  return s;
}
