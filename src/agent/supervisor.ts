/**
 * One owned partition's child process: started after the owner key exists, restarted with capped
 * exponential back-off, stopped (signal → grace → SIGKILL of the group) before the key is deleted.
 *
 * The child's life is a documented union (docs/agent.md has the diagram):
 *
 *   starting ──ready──▶ ready ──exit──▶ exited ──▶ backing-off ──▶ starting
 *      │                  │                │
 *      └──── release / restart / deadline ─┴──▶ stopping ──group gone──▶ exited / stopped
 *   exited ──budget spent──▶ failed (the partition is handed to another instance)
 *
 * {@link Supervisor.run} is what `onAcquire` returns: it settles only once the partition's signal has
 * aborted and the child's whole process group is gone, so the partitions library deletes the owner key
 * only after that.
 */
import type { Logger } from 'pino';
import { MusterError, isMusterError } from '../errors.js';
import { onAbort } from '../util/abort.js';
import type { AcquireContext } from '../partitions/index.js';
import type { HealthChecks, HealthStatus } from '../membership/index.js';
import type { AgentConfig, RunConfig } from './config.js';
import { startChildChecks } from './child-checks.js';
import { waitReady } from './readiness.js';
import { RotatingLog } from './child-log.js';
import { type ExitInfo, type ProcessHandle, type ProcessRegistry, spawnProcess } from './kernel.js';
import { freeLoopbackPort, mentions, substitute, type TemplateVars } from './template.js';

/** The life of a partition's child. */
export type ChildState =
  /** Spawned; waiting for fd 3 or the HTTP probe (or nothing, with `ready: none`). */
  | 'starting'
  /** Ready: serving. */
  | 'ready'
  /** The stop signal was sent; waiting until the whole group is gone. */
  | 'stopping'
  /** The group is gone; deciding what next (or done: `on-failure` after exit 0, `never`). */
  | 'exited'
  /** Waiting out the back-off before the next start. */
  | 'backing-off'
  /** Held without a child: the session's deadline is near and no renewal came (kill before the deadline). */
  | 'held'
  /** The restart budget is spent or the child cannot be spawned: handed to another instance. */
  | 'failed'
  /** The partition was released; nothing runs. */
  | 'stopped';

/** What a supervisor needs from the agent. */
export interface SupervisorDeps {
  readonly config: () => AgentConfig;
  readonly instance: string;
  readonly apiUrl: string;
  readonly apiToken: string;
  readonly relay: string | undefined;
  readonly registry: ProcessRegistry;
  readonly log: Logger;
  /** Per-partition settings overlay (reload compares them). */
  readonly runFor: (partition: string) => RunConfig;
  /** The restart budget is spent: move the partition elsewhere; resolves when the move was requested. */
  readonly handOff: (partition: string, reason: string) => Promise<boolean>;
  /** Something in the row changed (status record, metrics). */
  readonly changed: (sup: Supervisor) => void;
  /** The session's stop margin in ms: no child is started closer than this to the deadline. */
  readonly stopMarginMs: number;
  readonly monotonic: () => number;
  /** `MUSTER_HANDOFF_IN` / `MUSTER_HANDOFF_OUT` for the children (see docs/agent.md). */
  readonly handoff?: { readonly in?: string; readonly out: string };
}

/** One partition as `GET /v1/partitions` shows it. */
export interface PartitionRow {
  readonly partition: string;
  readonly token: number;
  readonly state: ChildState;
  readonly pid: number | null;
  readonly port: number | null;
  readonly restarts: number;
  readonly lastExit: { code: number | null; signal: string | null; at: string } | null;
  readonly startedAt: string | null;
  readonly readyAt: string | null;
  readonly checks: Record<string, HealthStatus>;
  readonly error: { code: string; message: string } | null;
  readonly backoffMs: number;
  readonly log: string | null;
}

/** What the next child is started with. */
interface ChildPlan {
  readonly vars: TemplateVars;
  readonly env: Record<string, string>;
  readonly command: string[];
  /** Compared on reload: a child restarts only when it changes. */
  readonly fingerprint: string;
}

/** A wait that ends when any of its signals aborts or its time is up; {@link Wait.cancel} ends it early. */
interface Wait {
  readonly done: Promise<void>;
  /** Removes the listeners and the timer (the promise then settles). Idempotent. */
  readonly cancel: () => void;
}

/**
 * Waits until one of `signals` aborts or `ms` passed (never, for `Infinity`), leaving no listener
 * behind once it is over: the partition's signal lives as long as the ownership, and a listener left
 * per child start or back-off would pile up (MaxListenersExceededWarning after ten restarts).
 */
export function waitAny(signals: readonly AbortSignal[], ms = Infinity): Wait {
  let finish!: () => void;
  const done = new Promise<void>((resolve) => (finish = resolve));
  const offs: (() => void)[] = [];
  let timer: NodeJS.Timeout | undefined;
  let over = false;
  const cancel = (): void => {
    if (over) return;
    over = true;
    for (const off of offs) off();
    if (timer !== undefined) clearTimeout(timer);
    finish();
  };
  for (const s of signals) {
    if (over) break;
    offs.push(onAbort(s, cancel));
  }
  if (!over && ms !== Infinity) timer = setTimeout(cancel, ms);
  return { done, cancel };
}

/** {@link waitAny} raced with `promises`; the listeners are removed when the first settles. */
async function waitAnyOr(
  signals: readonly AbortSignal[],
  ms: number,
  ...promises: Promise<unknown>[]
): Promise<void> {
  const w = waitAny(signals, ms);
  try {
    await Promise.race([w.done, ...promises]);
  } finally {
    w.cancel();
  }
}

/** 200 ms: a held supervisor re-checks the deadline this often (the watchdog un-holds too; a renewal may beat it). */
export const HELD_RECHECK_MS = 200;

/**
 * The delay before restart number `attempt + 1` since the last stable run: none for the first (a
 * child that ran stably and crashed once is restarted at once, as supervisord and systemd do), then
 * capped exponential back-off with jitter in [½, 1]: `initial·2^(attempt−1)`, at most `max`. A crash
 * loop is throttled from its second failure on.
 */
export function backoffDelay(
  attempt: number,
  initialMs: number,
  maxMs: number,
  random = Math.random,
): number {
  if (attempt <= 0) return 0;
  const raw = Math.min(maxMs, initialMs * 2 ** Math.min(attempt - 1, 30));
  return Math.round(raw * (0.5 + random() / 2));
}

/** Supervises the child of one owned partition. */
export class Supervisor {
  readonly partition: string;
  readonly token: number;
  readonly #ctx: AcquireContext;
  readonly #deps: SupervisorDeps;
  #state: ChildState = 'exited';
  #child: ProcessHandle | undefined;
  #port: number | undefined;
  #restarts = 0;
  #attempt = 0;
  #failures: number[] = [];
  #lastExit: ExitInfo | undefined;
  #startedAt: number | undefined;
  #readyAt: number | undefined;
  #error: MusterError | undefined;
  #backoffMs = 0;
  #checks: HealthChecks | undefined;
  #log: RotatingLog | undefined;
  /** Aborted to interrupt the current child (restart request, deadline hold). */
  #interrupt = new AbortController();
  #restartRequested: string | undefined;
  #held = false;
  #heldWake: (() => void) | undefined;
  /** The settings the current child was started with (reload compares). */
  #fingerprint = '';

  constructor(partition: string, ctx: AcquireContext, deps: SupervisorDeps) {
    this.partition = partition;
    this.token = ctx.token;
    this.#ctx = ctx;
    this.#deps = deps;
  }

  get state(): ChildState {
    return this.#state;
  }
  get pid(): number | undefined {
    return this.#child?.pid;
  }
  get checks(): HealthChecks | undefined {
    return this.#checks;
  }
  get fingerprint(): string {
    return this.#fingerprint;
  }

  row(): PartitionRow {
    const iso = (t: number | undefined): string | null =>
      t === undefined ? null : new Date(t).toISOString();
    return {
      partition: this.partition,
      token: this.token,
      state: this.#state,
      pid: this.#child?.pid ?? null,
      port: this.#port ?? null,
      restarts: this.#restarts,
      lastExit: this.#lastExit
        ? {
            code: this.#lastExit.code,
            signal: this.#lastExit.signal,
            at: new Date(this.#lastExit.at).toISOString(),
          }
        : null,
      startedAt: iso(this.#startedAt),
      readyAt: iso(this.#readyAt),
      checks: this.#checks?.statuses() ?? {},
      error: this.#error ? { code: this.#error.code, message: this.#error.message } : null,
      backoffMs: this.#backoffMs,
      log: this.#log?.path ?? null,
    };
  }

  #set(state: ChildState, extra: Record<string, unknown> = {}): void {
    if (this.#state === state) return;
    const from = this.#state;
    this.#state = state;
    this.#deps.log.info(
      { partition: this.partition, token: this.token, pid: this.#child?.pid, from, to: state, ...extra },
      `child ${state}`,
    );
    this.#deps.changed(this);
  }

  /** Asks for a restart (API, check action, reload). Counts as a restart, not as a failure. */
  restart(reason: string): void {
    if (this.#ctx.signal.aborted) return;
    this.#restartRequested = reason;
    this.#interrupt.abort();
    this.#wakeHeld();
  }

  /**
   * Kill before the deadline: stops the child now (grace capped at `graceMs`, then SIGKILL) and starts
   * none until {@link release} is called. Resolves when the group is gone.
   */
  async hold(graceMs: number): Promise<void> {
    if (this.#held)
      return this.#child === undefined ? undefined : this.#stopChild(graceMs).then(() => undefined);
    this.#held = true;
    this.#interrupt.abort();
    if (this.#child !== undefined) await this.#stopChild(graceMs);
  }

  /** The session was renewed after a hold: start again. */
  unhold(): void {
    if (!this.#held) return;
    this.#held = false;
    this.#wakeHeld();
  }

  #wakeHeld(): void {
    const w = this.#heldWake;
    this.#heldWake = undefined;
    w?.();
  }

  /**
   * The partition's whole life on this instance. Settles after the partition's signal aborted and the
   * child's group is gone; never rejects (failures are states and log lines).
   */
  async run(): Promise<void> {
    const signal = this.#ctx.signal;
    try {
      while (!signal.aborted) {
        if (this.#held || this.#tooCloseToDeadline()) {
          this.#set('held');
          await this.#waitUnheld();
          continue;
        }
        const exit = await this.#runOnce();
        if (signal.aborted) break;
        if (exit === 'skipped') continue; // the ownership ended or its deadline is near: not a failure
        if (this.#restartRequested !== undefined) {
          this.#restarts++;
          this.#deps.log.info(
            { partition: this.partition, reason: this.#restartRequested },
            'restarting child',
          );
          this.#restartRequested = undefined;
          continue;
        }
        if (this.#held) continue;
        if (exit === undefined) {
          // could not spawn: a failure like a crash
        } else if (!this.#shouldRestart(exit)) {
          this.#set('exited', { code: exit.code, signal: exit.signal, final: true });
          await waitAnyOr([signal, this.#restartSignal()], Infinity);
          if (this.#restartRequested !== undefined) {
            this.#restarts++;
            this.#restartRequested = undefined;
          }
          continue;
        }
        if (!this.#recordFailure()) {
          await this.#exhausted();
          continue;
        }
        const uptime = this.#startedAt === undefined || exit === undefined ? 0 : exit.at - this.#startedAt;
        if (uptime >= this.#run().backoff.resetAfterMs) this.#attempt = 0;
        this.#backoffMs = backoffDelay(
          this.#attempt++,
          this.#run().backoff.initialMs,
          this.#run().backoff.maxMs,
        );
        this.#set('backing-off', { delayMs: this.#backoffMs });
        if (this.#backoffMs > 0) await waitAnyOr([signal, this.#restartSignal()], this.#backoffMs);
        this.#restartRequested = undefined;
        this.#backoffMs = 0;
        this.#restarts++;
      }
    } catch (err) {
      this.#deps.log.error({ partition: this.partition, err: String(err) }, 'supervisor failed');
    } finally {
      if (this.#child !== undefined) await this.#stopChild(this.#run().graceMs);
      this.#checks?.close();
      await this.#log?.close();
      this.#set('stopped');
    }
  }

  #run(): RunConfig {
    return this.#deps.runFor(this.partition);
  }

  #tooCloseToDeadline(): boolean {
    return this.#ctx.deadline() - this.#deps.monotonic() < this.#deps.stopMarginMs;
  }

  async #waitUnheld(): Promise<void> {
    // re-check the deadline now and then: the watchdog un-holds, but a renewal may beat it
    const w = waitAny([this.#ctx.signal], HELD_RECHECK_MS);
    this.#heldWake = w.cancel;
    await w.done;
    if (this.#heldWake === w.cancel) this.#heldWake = undefined;
  }

  /** The signal a restart request aborts (a fresh one once the last was used). */
  #restartSignal(): AbortSignal {
    if (this.#interrupt.signal.aborted) this.#interrupt = new AbortController();
    return this.#interrupt.signal;
  }

  #shouldRestart(exit: ExitInfo): boolean {
    const policy = this.#run().policy;
    if (policy === 'never') return false;
    if (policy === 'always') return true;
    return !(exit.code === 0 && exit.signal === null);
  }

  /** Records a failure; false when the budget (N failures within the window) is spent. */
  #recordFailure(): boolean {
    const { count, windowMs } = this.#run().budget;
    const now = Date.now();
    this.#failures = this.#failures.filter((t) => now - t < windowMs);
    this.#failures.push(now);
    return this.#failures.length <= count;
  }

  async #exhausted(): Promise<void> {
    const { count, windowMs } = this.#run().budget;
    const last = this.#lastExit;
    const why =
      this.#error?.code === 'MUSTER_SPAWN_FAILED'
        ? this.#error.message
        : `exited ${last?.signal ? `on ${last.signal}` : `with code ${String(last?.code)}`}`;
    this.#error = new MusterError(
      'MUSTER_RESTART_BUDGET',
      `partition '${this.partition}': the child failed ${this.#failures.length} times within ${windowMs}ms (budget ${count}); last: ${why}; handing the partition to another instance`,
      { details: { partition: this.partition, token: this.token }, cause: this.#error },
    );
    this.#set('failed', { reason: this.#error.message });
    this.#deps.log.error({ partition: this.partition, token: this.token }, this.#error.message);
    const moved = await this.#deps.handOff(this.partition, this.#error.message).catch((err: unknown) => {
      this.#deps.log.error({ partition: this.partition, err: String(err) }, 'hand-off failed');
      return false;
    });
    // Handed off: the release comes through the partition's signal. Nobody to take it: retry after
    // the longest back-off with a fresh budget (loudly: the state stays `failed` meanwhile).
    const wait = moved ? this.#run().backoff.maxMs * 4 : this.#run().backoff.maxMs;
    await waitAnyOr([this.#ctx.signal, this.#restartSignal()], wait);
    this.#restartRequested = undefined;
    this.#failures = [];
    this.#attempt = 0;
  }

  /** The fingerprint the next child would be started with (reload compares it with the current one). */
  plannedFingerprint(): string {
    return this.#planSync(this.#run()).fingerprint;
  }

  async #plan(run: RunConfig, allocate: boolean): Promise<ChildPlan> {
    const wantsPort = [
      ...run.command,
      ...Object.values(run.env),
      run.ready.kind === 'http' ? run.ready.url : '',
    ].some((t) => mentions(t, 'port'));
    if (allocate && wantsPort && this.#port === undefined) this.#port = await freeLoopbackPort();
    return this.#planSync(run);
  }

  #planSync(run: RunConfig): ChildPlan {
    const deps = this.#deps;
    const cfg = deps.config();
    const vars: TemplateVars = {
      partition: this.partition,
      service: cfg.service,
      instance: deps.instance,
      token: this.token,
      ...(this.#port !== undefined ? { port: this.#port } : {}),
    };
    const env: Record<string, string> = {
      ...Object.fromEntries(Object.entries(run.env).map(([k, v]) => [k, substitute(v, vars)])),
      MUSTER_SERVICE: cfg.service,
      MUSTER_INSTANCE: deps.instance,
      MUSTER_PARTITION: this.partition,
      MUSTER_FENCING_TOKEN: String(this.token),
      MUSTER_API: deps.apiUrl,
      MUSTER_API_TOKEN: deps.apiToken,
      ...(deps.relay !== undefined ? { MUSTER_RELAY: deps.relay } : {}),
      ...(this.#port !== undefined ? { MUSTER_PORT: String(this.#port) } : {}),
      ...(deps.handoff !== undefined ? { MUSTER_HANDOFF_OUT: deps.handoff.out } : {}),
      ...(deps.handoff?.in !== undefined ? { MUSTER_HANDOFF_IN: deps.handoff.in } : {}),
    };
    const command = run.command.map((a) => substitute(a, vars));
    const fingerprint = JSON.stringify([command, env, run.cwd, run.ready, run.stopSignal, run.graceMs]);
    return { vars, env, command, fingerprint };
  }

  /**
   * Starts one child and waits until it exits or is interrupted; `undefined` when it could not be
   * spawned (a failure), `'skipped'` when the ownership may no longer start anything.
   */
  async #runOnce(): Promise<ExitInfo | undefined | 'skipped'> {
    const run = this.#run();
    const deps = this.#deps;
    const cfg = deps.config();
    if (this.#interrupt.signal.aborted) this.#interrupt = new AbortController();
    const plan = await this.#plan(run, true);
    const { vars, env, command } = plan;
    this.#fingerprint = plan.fingerprint;
    if (run.logs !== undefined && this.#log === undefined) {
      this.#log = new RotatingLog(
        run.logs.dir,
        `${cfg.service}-${this.partition}`,
        run.logs.maxSize,
        run.logs.keep,
      );
    }
    const log = this.#log;
    // The last check before a side effect: the ownership must still be valid (and not near its end).
    if (!this.#ctx.valid() || this.#tooCloseToDeadline()) return 'skipped';
    let child: ProcessHandle;
    try {
      child = await spawnProcess({
        command,
        env,
        ...(run.cwd !== undefined ? { cwd: run.cwd } : {}),
        label: `${cfg.service}/${this.partition}`,
        readyFd: run.ready.kind === 'fd',
        stopSignal: run.stopSignal,
        grace: run.graceMs,
        registry: deps.registry,
        // The next start (a hand-off's acquisition, a restart) writes its command to a child forked
        // ahead instead of waiting for a fork and an exec (docs/process.md, "Spares").
        prewarm: true,
        onLine: (stream, line) => {
          log?.write(stream, line);
          deps.log.debug({ partition: this.partition, stream, line }, 'child output');
        },
      });
    } catch (err) {
      this.#error = isMusterError(err)
        ? err
        : new MusterError(
            'MUSTER_SPAWN_FAILED',
            `cannot start ${JSON.stringify(command[0])}: ${String(err)}`,
          );
      this.#lastExit = undefined;
      deps.log.error(
        { partition: this.partition, token: this.token, code: this.#error.code, err: this.#error.message },
        'child could not be started',
      );
      deps.changed(this);
      return undefined;
    }
    this.#child = child;
    this.#error = undefined;
    this.#startedAt = Date.now();
    this.#readyAt = undefined;
    this.#set('starting', { command });
    // Stopped by the release, a restart request or the deadline watchdog.
    const interruption = waitAny([this.#ctx.signal, this.#restartSignal()]);
    const interrupted = interruption.done.then(() => 'interrupted' as const);
    const exited = child.exited.then(() => 'exited' as const);
    const ready = waitReady(child, run.ready, vars).then(
      () => 'ready' as const,
      (err: unknown) => ({ err }),
    );
    try {
      await this.#watch(child, run, vars, interrupted, exited, ready);
    } finally {
      interruption.cancel();
    }
    const exit = await child.exited;
    if (this.#child === child) {
      // exited by itself: the leader is gone; make sure the rest of its group is too
      await child.kill();
      this.#afterExit(exit);
    }
    return exit;
  }

  /** From the spawn until the child exits or is stopped (interrupted, or not ready in time). */
  async #watch(
    child: ProcessHandle,
    run: RunConfig,
    vars: TemplateVars,
    interrupted: Promise<'interrupted'>,
    exited: Promise<'exited'>,
    ready: Promise<'ready' | { err: unknown }>,
  ): Promise<void> {
    const deps = this.#deps;
    const first = await Promise.race([interrupted, exited, ready]);
    if (typeof first === 'object') {
      deps.log.warn(
        { partition: this.partition, pid: child.pid, err: String(first.err) },
        'child not ready in time: restarting',
      );
      await this.#stopChild(run.graceMs);
      return;
    }
    if (first === 'ready') {
      this.#readyAt = Date.now();
      this.#set('ready');
      this.#startChecks(vars, child.pid);
      void this.#publishAddress();
      const second = await Promise.race([interrupted, exited]);
      if (second === 'interrupted') await this.#stopChild(run.graceMs);
    } else if (first === 'interrupted') {
      await this.#stopChild(run.graceMs);
    }
  }

  #afterExit(exit: ExitInfo): void {
    this.#lastExit = exit;
    this.#child = undefined;
    this.#checks?.close();
    this.#checks = undefined;
    this.#set('exited', { code: exit.code, signal: exit.signal });
  }

  /** Stops the current child; resolves when its whole group is gone. */
  async #stopChild(graceMs: number): Promise<void> {
    const child = this.#child;
    if (child === undefined) return;
    this.#set('stopping', { graceMs });
    const exit = await child.stop({ signal: this.#run().stopSignal, grace: graceMs });
    if (this.#child === child) this.#afterExit(exit);
  }

  /** Writes `127.0.0.1:{port}` into the owner record (Contract C), so the proxy routes to the child. */
  async #publishAddress(): Promise<void> {
    if (this.#port === undefined) return;
    try {
      await this.#ctx.publish({ address: `127.0.0.1:${this.#port}` });
    } catch (err) {
      this.#deps.log.warn({ partition: this.partition, err: String(err) }, 'could not publish the address');
    }
  }

  #startChecks(vars: TemplateVars, pid: number): void {
    const cfg = this.#deps.config();
    if (cfg.checks.length === 0) return;
    const checks = startChildChecks({
      checks: cfg.checks,
      vars: { ...vars, pid },
      label: `${cfg.service}/${this.partition}`,
      registry: this.#deps.registry,
      log: this.#deps.log.child({ partition: this.partition }),
      restart: (reason) => this.restart(reason),
      release: (reason) => {
        void this.#deps.handOff(this.partition, reason).then((ok) => {
          if (ok) this.#set('failed', { reason });
        });
      },
    });
    checks.on('change', () => this.#deps.changed(this));
    this.#checks = checks;
  }
}
