/**
 * Health checks with Consul's semantics (brief §4): script, HTTP and TTL checks, each with an
 * interval, a timeout, thresholds before a status flips, and handlers fired once per transition.
 * {@link HealthChecks} holds a set of checks and computes the aggregate health an instance publishes.
 */
import { type Clock, type TimerHandle, systemClock } from '../clock.js';
import { invalidArgument } from '../errors.js';
import { type Duration, formatDuration, toMillis } from '../util/duration.js';
import { Emitter, type Listenable } from '../util/emitter.js';
import { type ProbeResult, runHttpProbe, runScriptProbe } from './probes.js';
import { type HealthStatus, HEALTH_STATUSES, severity } from './types.js';

/** 10 s between runs, Consul's usual interval: checks are for slow failures, sessions for crashes. */
export const DEFAULT_CHECK_INTERVAL_MS = 10_000;
/** 5 s: a probe slower than this is as good as failed. */
export const DEFAULT_CHECK_TIMEOUT_MS = 5_000;
/** Failing until proven otherwise, as Consul's "critical" start: nothing routes to an unchecked instance. */
export const DEFAULT_INITIAL_STATUS: HealthStatus = 'failing';

/** What a handler learns about a transition. */
export interface CheckTransition {
  readonly check: string;
  readonly previous: HealthStatus;
  readonly status: HealthStatus;
  /** Output of the run (or the TTL report's note) that caused the transition. */
  readonly output: string;
}

export type CheckHandler = (transition: CheckTransition) => void | Promise<void>;

/** Built-in actions beyond `markUnhealthy`, run on a transition to failing by hooks the agent provides. */
export type CheckAction = 'restart' | 'release';

export interface CheckOptionsBase {
  /** Unique within the instance; appears in the record's `checks`. */
  name: string;
  /** Consecutive results needed before the status flips to each status. Default: 1 each. */
  thresholds?: { passing?: number; warning?: number; failing?: number };
  /** Status before the first result. Default: {@link DEFAULT_INITIAL_STATUS}. */
  initialStatus?: HealthStatus;
  onPassing?: CheckHandler;
  onWarning?: CheckHandler;
  onFailing?: CheckHandler;
  /** Whether this check counts toward the published `health`. Default: true. */
  markUnhealthy?: boolean;
  /** Actions to run on a transition to failing (see {@link HealthChecksOptions.actions}). Default: none. */
  actions?: readonly CheckAction[];
}

export interface ScriptCheckOptions extends CheckOptionsBase {
  kind: 'script';
  /** A shell line (run by /bin/sh -c) or an argv array (no shell). */
  command: string | readonly string[];
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Default: {@link DEFAULT_CHECK_INTERVAL_MS}. */
  interval?: Duration;
  /** The script is killed (its process group) after this. Default: {@link DEFAULT_CHECK_TIMEOUT_MS}. */
  timeout?: Duration;
}

export interface HttpCheckOptions extends CheckOptionsBase {
  kind: 'http';
  url: string;
  headers?: Readonly<Record<string, string>>;
  interval?: Duration;
  timeout?: Duration;
}

export interface TtlCheckOptions extends CheckOptionsBase {
  kind: 'ttl';
  /** The process must report within this long after its last report (or the start), or the check fails. */
  ttl: Duration;
}

export type CheckOptions = ScriptCheckOptions | HttpCheckOptions | TtlCheckOptions;

/** Events of a {@link HealthChecks} set. */
export interface HealthChecksEvents extends Record<string, unknown[]> {
  /** A check's status flipped. */
  transition: [transition: CheckTransition];
  /** The aggregate or any check's status changed. */
  change: [health: HealthStatus, checks: Readonly<Record<string, HealthStatus>>];
  /** A handler or action threw or rejected. */
  error: [error: unknown, check: string];
}

export interface HealthChecksOptions {
  clock?: Clock;
  /** Hooks for the built-in actions; an action without a hook does nothing. */
  actions?: Partial<Record<CheckAction, CheckHandler>>;
}

function positiveInt(value: unknown, what: string): number {
  if (value === undefined) return 1;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1) {
    throw invalidArgument(`${what} must be a whole number ≥ 1, got ${JSON.stringify(value)}`);
  }
  return value;
}

/** One check. TTL checks are driven by {@link Check.report}; the others run on their interval. */
export class Check {
  readonly name: string;
  readonly kind: CheckOptions['kind'];
  readonly countsTowardHealth: boolean;
  readonly #options: CheckOptions;
  readonly #owner: HealthChecks;
  readonly #clock: Clock;
  readonly #thresholds: Record<HealthStatus, number>;
  readonly #periodMs: number;
  readonly #timeoutMs: number;
  #status: HealthStatus;
  #output = '';
  #streakStatus: HealthStatus | undefined;
  #streak = 0;
  #timer: TimerHandle | undefined;
  #running: AbortController | undefined;
  #closed = false;

  /** @internal Use {@link HealthChecks.add}. */
  constructor(owner: HealthChecks, options: CheckOptions, clock: Clock) {
    if (typeof options.name !== 'string' || options.name.length === 0 || options.name.length > 128) {
      throw invalidArgument(`a check needs a name of 1–128 characters, got ${JSON.stringify(options.name)}`);
    }
    const initial = options.initialStatus ?? DEFAULT_INITIAL_STATUS;
    if (!HEALTH_STATUSES.includes(initial))
      throw invalidArgument(`initialStatus must be passing, warning or failing`);
    this.#thresholds = {
      passing: positiveInt(options.thresholds?.passing, 'thresholds.passing'),
      warning: positiveInt(options.thresholds?.warning, 'thresholds.warning'),
      failing: positiveInt(options.thresholds?.failing, 'thresholds.failing'),
    };
    switch (options.kind) {
      case 'ttl':
        this.#periodMs = toMillis(options.ttl, `check '${options.name}' ttl`);
        this.#timeoutMs = 0;
        break;
      case 'script':
        if (
          typeof options.command === 'string' ? options.command.length === 0 : options.command.length === 0
        ) {
          throw invalidArgument(`check '${options.name}' needs a command`);
        }
        this.#periodMs = toMillis(options.interval ?? DEFAULT_CHECK_INTERVAL_MS, 'interval');
        this.#timeoutMs = toMillis(options.timeout ?? DEFAULT_CHECK_TIMEOUT_MS, 'timeout');
        break;
      case 'http':
        try {
          new URL(options.url);
        } catch {
          throw invalidArgument(
            `check '${options.name}' url must be an absolute URL, got ${JSON.stringify(options.url)}`,
          );
        }
        this.#periodMs = toMillis(options.interval ?? DEFAULT_CHECK_INTERVAL_MS, 'interval');
        this.#timeoutMs = toMillis(options.timeout ?? DEFAULT_CHECK_TIMEOUT_MS, 'timeout');
        break;
      default:
        throw invalidArgument(
          `check kind must be script, http or ttl, got ${JSON.stringify((options as { kind: unknown }).kind)}`,
        );
    }
    if (this.#periodMs <= 0)
      throw invalidArgument(`check '${options.name}' needs a positive interval or ttl`);
    if (options.kind !== 'ttl' && this.#timeoutMs <= 0)
      throw invalidArgument(`check '${options.name}' needs a positive timeout`);
    this.name = options.name;
    this.kind = options.kind;
    this.countsTowardHealth = options.markUnhealthy !== false;
    this.#options = options;
    this.#owner = owner;
    this.#clock = clock;
    this.#status = initial;
  }

  get status(): HealthStatus {
    return this.#status;
  }

  /** Output of the last run or report. */
  get output(): string {
    return this.#output;
  }

  /** @internal Starts the schedule: probes run at once, TTL checks arm their expiry. */
  start(): void {
    if (this.kind === 'ttl') this.#armTtl();
    else this.#schedule(0);
  }

  /** TTL checks: reports a status; the TTL restarts. Throws `MUSTER_INVALID_ARGUMENT` on other kinds. */
  report(status: HealthStatus, note = ''): void {
    if (this.kind !== 'ttl')
      throw invalidArgument(`check '${this.name}' is a ${this.kind} check; only TTL checks take reports`);
    if (!HEALTH_STATUSES.includes(status))
      throw invalidArgument(`status must be passing, warning or failing, got ${JSON.stringify(status)}`);
    if (this.#closed) return;
    this.#armTtl();
    this.#record({ status, output: note });
  }
  pass(note?: string): void {
    this.report('passing', note);
  }
  warn(note?: string): void {
    this.report('warning', note);
  }
  fail(note?: string): void {
    this.report('failing', note);
  }

  /** Runs a script or HTTP probe now (outside the schedule) and records its result. */
  async runNow(): Promise<HealthStatus> {
    if (this.kind === 'ttl') return this.#status;
    const ac = new AbortController();
    this.#running = ac;
    const timer = this.#clock.setTimeout(() => ac.abort(), this.#timeoutMs);
    let result: ProbeResult;
    try {
      const o = this.#options;
      result =
        o.kind === 'script'
          ? await runScriptProbe(o.command, ac.signal, { cwd: o.cwd, env: o.env })
          : await runHttpProbe((o as HttpCheckOptions).url, ac.signal, (o as HttpCheckOptions).headers);
      if (ac.signal.aborted && result.status !== 'failing') {
        result = { status: 'failing', output: `timed out after ${formatDuration(this.#timeoutMs)}` };
      }
    } finally {
      this.#clock.clearTimeout(timer);
      if (this.#running === ac) this.#running = undefined;
    }
    if (!this.#closed) this.#record(result);
    return this.#status;
  }

  /** Stops the schedule and kills a running probe; idempotent. */
  close(): void {
    this.#closed = true;
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#running?.abort();
  }

  #schedule(delayMs: number): void {
    if (this.#closed) return;
    this.#timer = this.#clock.setTimeout(() => {
      this.#timer = undefined;
      this.runNow().then(
        () => this.#schedule(this.#periodMs),
        (err: unknown) => {
          this.#owner.reportError(err, this.name);
          this.#schedule(this.#periodMs);
        },
      );
    }, delayMs);
  }

  #armTtl(): void {
    if (this.#closed) return;
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    this.#timer = this.#clock.setTimeout(() => {
      this.#timer = undefined;
      this.#armTtl(); // each silent TTL period counts as one more failing result
      this.#record({
        status: 'failing',
        output: `no report within the TTL of ${formatDuration(this.#periodMs)}`,
      });
    }, this.#periodMs);
  }

  /** Applies one result through the thresholds; fires the handler on a transition. */
  #record(result: ProbeResult): void {
    this.#output = result.output;
    if (result.status === this.#streakStatus) this.#streak++;
    else {
      this.#streakStatus = result.status;
      this.#streak = 1;
    }
    if (result.status === this.#status || this.#streak < this.#thresholds[result.status]) return;
    const transition: CheckTransition = {
      check: this.name,
      previous: this.#status,
      status: result.status,
      output: result.output,
    };
    this.#status = result.status;
    const o = this.#options;
    const handler =
      result.status === 'passing' ? o.onPassing : result.status === 'warning' ? o.onWarning : o.onFailing;
    this.#owner.fire(handler, transition);
    if (result.status === 'failing')
      for (const action of o.actions ?? []) this.#owner.runAction(action, transition);
    this.#owner.transitioned(transition);
  }
}

/** A set of checks and their aggregate health: the worst status of the checks that count toward it. */
export class HealthChecks implements Listenable<HealthChecksEvents> {
  readonly #clock: Clock;
  readonly #actions: Partial<Record<CheckAction, CheckHandler>>;
  readonly #checks = new Map<string, Check>();
  readonly #events = new Emitter<HealthChecksEvents>();
  #closed = false;

  constructor(options: HealthChecksOptions = {}) {
    this.#clock = options.clock ?? systemClock;
    this.#actions = { ...options.actions };
  }

  /** Adds and starts a check. Throws `MUSTER_INVALID_ARGUMENT` for bad options or a duplicate name. */
  add(options: CheckOptions): Check {
    if (this.#closed) throw invalidArgument('the health checks were closed');
    if (this.#checks.has(options.name))
      throw invalidArgument(`a check named '${options.name}' already exists`);
    const check = new Check(this, options, this.#clock);
    this.#checks.set(check.name, check);
    this.#changed();
    check.start();
    return check;
  }

  /** Stops and removes a check; returns whether it existed. */
  remove(name: string): boolean {
    const check = this.#checks.get(name);
    if (check === undefined) return false;
    check.close();
    this.#checks.delete(name);
    this.#changed();
    return true;
  }

  get(name: string): Check | undefined {
    return this.#checks.get(name);
  }

  /** Sets the hook for a built-in action (the agent provides `restart` and `release`). */
  setAction(action: CheckAction, hook: CheckHandler | undefined): void {
    if (hook === undefined) delete this.#actions[action];
    else this.#actions[action] = hook;
  }

  /** The worst status among checks that count toward health; `passing` when there are none. */
  health(): HealthStatus {
    let worst: HealthStatus = 'passing';
    for (const c of this.#checks.values())
      if (c.countsTowardHealth && severity(c.status) > severity(worst)) worst = c.status;
    return worst;
  }

  /** Every check's status by name. */
  statuses(): Record<string, HealthStatus> {
    return Object.fromEntries([...this.#checks.values()].map((c) => [c.name, c.status]));
  }

  on<K extends keyof HealthChecksEvents>(
    event: K,
    listener: (...args: HealthChecksEvents[K]) => void,
  ): () => void {
    return this.#events.on(event, listener);
  }
  once<K extends keyof HealthChecksEvents>(
    event: K,
    listener: (...args: HealthChecksEvents[K]) => void,
  ): () => void {
    return this.#events.once(event, listener);
  }
  off<K extends keyof HealthChecksEvents>(
    event: K,
    listener: (...args: HealthChecksEvents[K]) => void,
  ): void {
    this.#events.off(event, listener);
  }

  /** Stops every check; idempotent. */
  close(): void {
    this.#closed = true;
    for (const c of this.#checks.values()) c.close();
  }

  /** @internal */
  fire(handler: CheckHandler | undefined, transition: CheckTransition): void {
    if (handler === undefined) return;
    try {
      const r = handler(transition);
      if (r instanceof Promise) r.catch((err: unknown) => this.reportError(err, transition.check));
    } catch (err) {
      this.reportError(err, transition.check);
    }
  }

  /** @internal */
  runAction(action: CheckAction, transition: CheckTransition): void {
    this.fire(this.#actions[action], transition);
  }

  /** @internal */
  transitioned(transition: CheckTransition): void {
    this.#events.emit('transition', transition);
    this.#changed();
  }

  /** @internal */
  reportError(err: unknown, check: string): void {
    if (this.#events.emit('error', err, check) === 0) {
      process.emitWarning(`health check '${check}': ${err instanceof Error ? err.message : String(err)}`);
    }
  }

  #changed(): void {
    this.#events.emit('change', this.health(), this.statuses());
  }
}
