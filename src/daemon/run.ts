/**
 * `runDaemon`: one lifecycle for every long-running muster command.
 *
 *   starting ──start() resolves──▶ running ──1st SIGTERM/SIGINT, stop(), fail()──▶ stopping
 *      │                                                                              │    │
 *      │ start() throws                 body.stop() returns (exit 0, or 1 if it threw) │    │ 2nd signal,
 *      ▼                                                                              ▼    │ deadline,
 *   stopped ◀──────────────────────────────────────────────────────────────────── stopped  │ stop({force})
 *                       body.stop() returns, or forceTimeout passes (exit 128+n) ▲         ▼
 *                                                                                 └──── forcing
 *
 * See docs/daemon.md for the exit codes and the admin API.
 */
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { Clock, TimerHandle } from '../clock.js';
import { invalidArgument, isMusterError, MusterError } from '../errors.js';
import { formatDuration } from '../util/duration.js';
import { AdminHttpServer, type AdminServer, sendJson } from './admin.js';
import { createDaemonLogger } from './logger.js';
import { createDaemonRegistry, type DaemonState, type RuntimeMetrics, setStateGauge } from './metrics.js';
import { type DaemonOptions, type ResolvedOptions, resolveOptions, EXIT_LINGER_MS } from './options.js';
import { listenToDisconnect, listenToProcess, signalExitCode, type StopSignal } from './signals.js';

/** What the body's `start` receives. */
export interface DaemonContext {
  /** The daemon's name, as in {@link DaemonOptions.name}. */
  readonly name: string;
  /** pino child with `{ daemon: name }`; make children with `logFor(ctx.log, { service, instance, partition })`. */
  readonly log: Logger;
  /** The daemon's own registry (default process metrics included); `/metrics` serves it. */
  readonly metrics: Registry;
  /** Add routes; it already serves `/metrics`, `/healthz` and `/v1/status`. */
  readonly admin: AdminServer;
  /** Aborts when a graceful stop is requested (first signal, `stop()`, `fail()`). */
  readonly stopping: AbortSignal;
  /** Aborts when the stop is forced (second signal, deadline); the same signal `stop(force)` gets. */
  readonly forcing: AbortSignal;
  /** The clock the runtime's deadlines run on. */
  readonly clock: Clock;
  /**
   * The body cannot go on (e.g. its store session is gone for good): logs `err`, stops gracefully,
   * and the daemon ends with exit code 1. Safe to call more than once and from any state.
   */
  fail(err: unknown): void;
}

/** What `start` returns: how to stop, and optionally status, health and reload. */
export interface DaemonBody {
  /**
   * Stop. Called once, after `ctx.stopping` aborts. Drain and close; when `force` aborts (second
   * signal or `shutdownTimeout`), cut what is left (kill children, destroy sockets) and return.
   */
  stop(force: AbortSignal): Promise<void>;
  /** JSON for `GET /v1/status` (under `status`). */
  status?(): unknown;
  /** `GET /healthz`: 503 when `ok` is false. Default: healthy while running. */
  health?(): { ok: boolean; reason?: string };
  /** SIGHUP (and `Daemon.reload()`): re-read configuration. Without it, SIGHUP stops the daemon. */
  reload?(): Promise<unknown>;
}

/** A running daemon. */
export interface Daemon {
  readonly ctx: DaemonContext;
  /** The exit code, once stopped: 0 clean, 1 failed, 128 + signal number when forced. */
  readonly done: Promise<number>;
  /** The lifecycle state. */
  readonly state: DaemonState;
  /** Graceful stop (as the first signal); `{ force: true }` forces at once. Resolves to the exit code. */
  stop(opts?: { force?: boolean }): Promise<number>;
  /** Calls the body's `reload()`; rejects `MUSTER_INVALID_ARGUMENT` when it has none. */
  reload(): Promise<unknown>;
  [Symbol.asyncDispose](): Promise<void>;
}

/** Exit codes other than the forced ones (128 + signal number: SIGINT 130, SIGTERM 143, SIGHUP 129). */
export const DAEMON_EXIT = {
  /** Stopped gracefully before the deadline. */
  ok: 0,
  /** `start` failed with a coded error, `stop` threw, or the body called `ctx.fail`. */
  failed: 1,
} as const;

/**
 * Runs a daemon: starts the admin server, calls `start`, then handles signals until it stops.
 * The first SIGTERM or SIGINT aborts `ctx.stopping` and calls `body.stop(force)`; a second signal,
 * or `shutdownTimeout` without the stop finishing, aborts `force`; `forceTimeout` later the daemon
 * ends whatever the body does. SIGHUP calls `body.reload()` (or stops when there is none).
 *
 * Rejects with the error `start` threw (after closing the admin server), with
 * `MUSTER_INVALID_ARGUMENT` for bad options or a non-loopback admin address without a token, and
 * with `MUSTER_ADDRESS_IN_USE` when the admin port is taken.
 */
export async function runDaemon(
  options: DaemonOptions,
  start: (ctx: DaemonContext) => Promise<DaemonBody>,
): Promise<Daemon> {
  const resolved = resolveOptions(options);
  const log = createDaemonLogger(resolved.name, resolved.logLevel, resolved.logger);
  const { registry, runtime } = createDaemonRegistry(resolved.name, resolved.admin !== false);
  return new Lifecycle(resolved, log, registry, runtime).run(start);
}

class Lifecycle {
  readonly #o: ResolvedOptions;
  readonly #log: Logger;
  readonly #runtime: RuntimeMetrics;
  readonly #admin: AdminHttpServer;
  readonly #stopping = new AbortController();
  readonly #force = new AbortController();
  readonly #ctx: DaemonContext;
  readonly #startedAt: number;
  #state: DaemonState = 'starting';
  #body: DaemonBody | undefined;
  #signal: StopSignal | undefined;
  #failure: unknown;
  #deadline: TimerHandle | undefined;
  #giveUpTimer: TimerHandle | undefined;
  #gaveUp = false;
  readonly #giveUp: Promise<'gave-up'>;
  #onGiveUp: () => void = () => undefined;
  readonly #done: Promise<number>;
  #resolveDone: (code: number) => void = () => undefined;
  #unlisten: () => void = () => undefined;
  #pendingHangup = false;
  #reloads: Promise<unknown> = Promise.resolve();

  constructor(o: ResolvedOptions, log: Logger, metrics: Registry, runtime: RuntimeMetrics) {
    this.#o = o;
    this.#log = log;
    this.#runtime = runtime;
    this.#admin = new AdminHttpServer(log);
    this.#startedAt = o.clock.now();
    this.#giveUp = new Promise((resolve) => (this.#onGiveUp = () => resolve('gave-up')));
    this.#done = new Promise((resolve) => (this.#resolveDone = resolve));
    this.#ctx = {
      name: o.name,
      log,
      metrics,
      admin: this.#admin,
      stopping: this.#stopping.signal,
      forcing: this.#force.signal,
      clock: o.clock,
      fail: (err) => this.#fail(err),
    };
    setStateGauge(runtime.state, 'starting');
    this.#builtinRoutes(metrics);
  }

  async run(start: (ctx: DaemonContext) => Promise<DaemonBody>): Promise<Daemon> {
    if (this.#o.admin !== false) await this.#admin.listen(this.#o.admin);
    if (this.#o.handleSignals) {
      this.#unlisten = listenToProcess({
        stop: (signal) => this.#requestStop(signal),
        hangup: () => this.#hangup(),
        ...(this.#o.stopOnDisconnect
          ? { disconnect: () => this.#requestStop(undefined, 'parent disconnected') }
          : {}),
      });
    } else if (this.#o.stopOnDisconnect) {
      this.#unlisten = listenToDisconnect(() => this.#requestStop(undefined, 'parent disconnected'));
    }
    this.#log.info({ pid: process.pid, admin: this.#admin.url || undefined }, 'starting');
    let body: DaemonBody | 'gave-up';
    const starting = start(this.#ctx);
    try {
      body = await Promise.race([starting, this.#giveUp]);
    } catch (err) {
      this.#log.error(logError(err), 'start failed');
      await this.#finish(DAEMON_EXIT.failed);
      throw err;
    }
    if (body === 'gave-up') {
      // A start that finishes after all is stopped at once (forced), so nothing it opened lingers.
      starting.then(
        (late) => late.stop(this.#force.signal).catch(() => undefined),
        () => undefined,
      );
      const err = new MusterError(
        'MUSTER_ABORTED',
        'the daemon was forced to stop before it finished starting',
      );
      await this.#finish(this.#forcedCode());
      throw err;
    }
    this.#body = body;
    if (this.#stopping.signal.aborted) {
      void this.#stopBody();
    } else {
      this.#setState('running');
      this.#log.info({ admin: this.#admin.url || undefined }, 'running');
      if (this.#pendingHangup) this.#hangup();
    }
    return this.#handle();
  }

  #handle(): Daemon {
    const stop = (opts: { force?: boolean } = {}): Promise<number> => {
      if (opts.force === true) this.#forceNow('stop({ force: true })');
      else this.#requestStop(undefined, 'stop()');
      return this.#done;
    };
    const state = (): DaemonState => this.#state;
    return {
      ctx: this.#ctx,
      done: this.#done,
      get state() {
        return state();
      },
      stop,
      reload: () => this.#reload(),
      [Symbol.asyncDispose]: async () => {
        await stop();
      },
    };
  }

  #builtinRoutes(metrics: Registry): void {
    this.#admin.route('GET', '/metrics', async (_req, res) => {
      const text = await metrics.metrics();
      res.writeHead(200, { 'content-type': metrics.contentType, 'cache-control': 'no-store' });
      res.end(text);
    });
    this.#admin.openRoute('GET', '/healthz', (_req, res) => {
      const health = this.#state === 'running' ? (this.#body?.health?.() ?? { ok: true }) : undefined;
      if (health?.ok === true) return { status: 'ok' };
      sendJson(res, 503, {
        status: health === undefined ? this.#state : 'unhealthy',
        ...(health?.reason !== undefined ? { reason: health.reason } : {}),
      });
      return undefined;
    });
    this.#admin.route('POST', '/v1/reload', async () => (await this.#reload()) ?? { reloaded: true });
    this.#admin.route('GET', '/v1/status', () => ({
      daemon: this.#o.name,
      state: this.#state,
      pid: process.pid,
      startedAt: new Date(this.#startedAt).toISOString(),
      uptimeSeconds: Math.round((this.#o.clock.now() - this.#startedAt) / 1000),
      status: this.#body?.status?.() ?? null,
    }));
  }

  #setState(state: DaemonState): void {
    this.#state = state;
    setStateGauge(this.#runtime.state, state);
  }

  #requestStop(signal: StopSignal | undefined, why?: string): void {
    if (this.#state === 'stopped') return;
    if (this.#stopping.signal.aborted) {
      if (signal !== undefined) this.#forceNow(`second signal (${signal})`);
      return;
    }
    this.#signal = signal;
    const reason = signal ?? why ?? 'stop requested';
    this.#stopping.abort(new MusterError('MUSTER_CLOSED', `the daemon is stopping (${reason})`));
    this.#log.info(
      { signal, reason, deadline: formatDuration(this.#o.shutdownTimeoutMs) },
      `stopping gracefully (${reason}); forced after ${formatDuration(this.#o.shutdownTimeoutMs)} or on a second signal`,
    );
    this.#deadline = this.#o.clock.setTimeout(
      () => this.#forceNow(`shutdownTimeout of ${formatDuration(this.#o.shutdownTimeoutMs)} passed`),
      this.#o.shutdownTimeoutMs,
    );
    // A stop in progress keeps the process alive until it is done or forced.
    this.#deadline.ref?.();
    const running = this.#state === 'running';
    this.#setState('stopping');
    if (running) void this.#stopBody();
  }

  #forceNow(why: string): void {
    if (this.#state === 'stopped' || this.#force.signal.aborted) return;
    if (!this.#stopping.signal.aborted) this.#requestStop(undefined, why);
    if (this.#deadline !== undefined) this.#o.clock.clearTimeout(this.#deadline);
    this.#force.abort(new MusterError('MUSTER_ABORTED', `the stop was forced: ${why}`));
    this.#setState('forcing');
    this.#log.warn({ why, forceTimeout: formatDuration(this.#o.forceTimeoutMs) }, `forcing the stop: ${why}`);
    this.#giveUpTimer = this.#o.clock.setTimeout(() => {
      this.#gaveUp = true;
      this.#onGiveUp();
    }, this.#o.forceTimeoutMs);
    this.#giveUpTimer.ref?.();
  }

  #fail(err: unknown): void {
    if (this.#state === 'stopped') return;
    this.#failure ??= err;
    this.#log.error(logError(err), 'the daemon cannot go on; stopping');
    this.#requestStop(undefined, `failed: ${isMusterError(err) ? err.code : 'error'}`);
  }

  async #stopBody(): Promise<void> {
    const body = this.#body as DaemonBody;
    const t0 = this.#o.clock.monotonic();
    let failed = this.#failure !== undefined;
    try {
      await Promise.race([body.stop(this.#force.signal), this.#giveUp]);
    } catch (err) {
      failed = true;
      this.#log.error(logError(err), 'stop failed');
    }
    if (this.#gaveUp) {
      this.#log.error(
        { forceTimeout: formatDuration(this.#o.forceTimeoutMs) },
        'the daemon did not stop within forceTimeout after it was forced; exiting anyway',
      );
    }
    const forced = this.#force.signal.aborted;
    const code = failed ? DAEMON_EXIT.failed : forced ? this.#forcedCode() : DAEMON_EXIT.ok;
    this.#log.info({ ms: Math.round(this.#o.clock.monotonic() - t0), forced }, 'body stopped');
    await this.#finish(code);
  }

  #forcedCode(): number {
    return signalExitCode(this.#signal ?? 'SIGTERM');
  }

  async #finish(code: number): Promise<void> {
    if (this.#deadline !== undefined) this.#o.clock.clearTimeout(this.#deadline);
    if (this.#giveUpTimer !== undefined) this.#o.clock.clearTimeout(this.#giveUpTimer);
    this.#unlisten();
    await this.#admin.close();
    this.#setState('stopped');
    this.#log.info({ code, forced: this.#force.signal.aborted }, `stopped (exit code ${code})`);
    this.#resolveDone(code);
    if (!this.#o.exitProcess) return;
    process.exitCode = code;
    if (this.#force.signal.aborted) {
      this.#log.flush?.();
      process.exit(code);
    }
    setTimeout(() => {
      this.#log.warn({ lingerMs: EXIT_LINGER_MS }, 'still running after the stop (an open handle); exiting');
      this.#log.flush?.();
      // process.exitCode, not `code`: the command may have set its own after the daemon stopped.
      process.exit();
    }, EXIT_LINGER_MS).unref();
  }

  #hangup(): void {
    if (this.#state === 'starting') {
      this.#pendingHangup = true;
      return;
    }
    if (this.#state !== 'running') return;
    if (this.#body?.reload === undefined) {
      this.#requestStop('SIGHUP');
      return;
    }
    this.#log.info('SIGHUP: reloading');
    this.#reload().catch(() => undefined); // logged and counted in #reload
  }

  /** Runs the body's reload (one at a time); resolves to what it returned (the admin route answers it). */
  #reload(): Promise<unknown> {
    const body = this.#body;
    if (body?.reload === undefined) {
      return Promise.reject(invalidArgument(`the ${this.#o.name} daemon cannot reload`));
    }
    const next = this.#reloads.then(async () => {
      try {
        const result = await body.reload?.();
        this.#runtime.reloads.inc({ result: 'ok' });
        this.#log.info('reloaded');
        return result;
      } catch (err) {
        this.#runtime.reloads.inc({ result: 'error' });
        this.#log.error(logError(err), 'reload failed; still running with the previous configuration');
        throw err;
      }
    });
    this.#reloads = next.catch(() => undefined);
    return next;
  }
}

/** A coded error is logged as its code, message and details (its stack is noise); others whole. */
function logError(err: unknown): Record<string, unknown> {
  return isMusterError(err) ? { error: err.toJSON() } : { err };
}
