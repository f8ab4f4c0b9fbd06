/**
 * Sessions: a lease plus its keep-alive loop, with a local validity deadline (brief §2).
 *
 * The deadline is `sent + ttl − margin`, where `sent` is the monotonic time read *before* the last
 * acknowledged keep-alive (or the grant) was sent and `ttl` is the TTL the store granted. The store
 * received that request after `sent`, so it cannot expire the lease before `sent + ttl` of real time;
 * the margin absorbs the rate error between this machine's clock and the store's. Work that stops
 * by the deadline therefore never overlaps with a successor. When the deadline passes without a
 * fresh acknowledgement the session is lost at once, without waiting to hear from the store.
 * See docs/membership.md for the argument and the worst-case detection times.
 */
import { type Clock, type TimerHandle, systemClock } from '../clock.js';
import { abortedError, invalidArgument, isMusterError, MusterError, throwIfAborted } from '../errors.js';
import { type LeaseId, MAX_LEASE_TTL_SECONDS, type Store } from '../store/index.js';
import { type Duration, formatDuration, toMillis } from '../util/duration.js';
import { Emitter, type Listenable } from '../util/emitter.js';
import { onAbort } from '../util/abort.js';

/** 3 s: a crash is noticed in about 3 s, while a 1 s keep-alive period survives an etcd leader election. */
export const DEFAULT_SESSION_TTL_MS = 3000;
/** 1 s: the port's lease TTLs are whole seconds (etcd raises TTLs below ~2 s anyway). */
export const MIN_SESSION_TTL_MS = 1000;
/**
 * 1,000 ppm (0.1 %): crystal oscillators err by tens of ppm and NTP slews at most 500 ppm, on each
 * of the two machines; 1,000 ppm covers both with room to spare.
 */
export const DEFAULT_CLOCK_RATE_ERROR_PPM = 1000;
/**
 * 100 ms: a floor for the margin. It covers timer lateness on a busy event loop, so that code which
 * only listens to `lost` (rather than checking `isValid()`) still hears it before the store can
 * expire the lease; a 3 s session gives up 3 % of its TTL for it.
 */
export const DEFAULT_MIN_SAFETY_MARGIN_MS = 100;

/** Node's timers hold at most 2^31 − 1 ms (24.8 days); longer waits are re-armed. */
const MAX_TIMER_MS = 2 ** 31 - 1;
/** 10 s: a keep-alive unanswered this long (or one period, if shorter) is followed by another. */
const MAX_ATTEMPT_WAIT_MS = 10_000;

/** At most this many unanswered keep-alives at once (a black-holed connection must not pile them up). */
const MAX_KEEPALIVES_IN_FLIGHT = 3;

/** What a session is doing. `active` → `lost` (deadline passed, lease gone) or `closed` (by `close()`). */
export type SessionState = 'active' | 'lost' | 'closed';

export interface SessionOptions {
  /** Lease TTL, rounded up to whole seconds, 1 s … 1 year. Default: {@link DEFAULT_SESSION_TTL_MS}. */
  ttl?: Duration;
  /** Period of keep-alives after an acknowledged one. Default: the granted TTL / 3. */
  keepAliveInterval?: Duration;
  /** Assumed worst relative clock-rate error, in ppm. Default: {@link DEFAULT_CLOCK_RATE_ERROR_PPM}. */
  clockRateErrorPpm?: number;
  /** Lower bound of the safety margin in ms. Default: {@link DEFAULT_MIN_SAFETY_MARGIN_MS}. */
  minSafetyMargin?: Duration;
  /** Time source. Default: the system clock. */
  clock?: Clock;
  /** Aborts opening (the lease is revoked if it was granted); aborting later closes the session. */
  signal?: AbortSignal;
}

/** Events of a {@link Session}; listeners that throw are reported and ignored. */
export interface SessionEvents extends Record<string, unknown[]> {
  /** A keep-alive was acknowledged; the new deadline (monotonic ms). */
  renewed: [deadline: number];
  /** A keep-alive attempt failed (the session is still valid until its deadline). */
  keepAliveFailed: [error: unknown];
  /** The session was lost: `MUSTER_SESSION_LOST` with the cause. */
  lost: [error: MusterError];
  /** `close()` ended the session. */
  closed: [];
}

/** The safety margin for a TTL: the clock-rate error over one TTL, at least the floor. */
export function safetyMargin(ttlMs: number, ppm: number, minMs: number): number {
  return Math.max(minMs, Math.ceil((ttlMs * ppm) / 1e6));
}

interface ResolvedSessionOptions {
  readonly ttlSeconds: number;
  readonly keepAliveIntervalMs: number | undefined;
  readonly ppm: number;
  readonly minMarginMs: number;
  readonly clock: Clock;
  readonly signal: AbortSignal | undefined;
}

function resolveOptions(options: SessionOptions): ResolvedSessionOptions {
  const ttlMs = toMillis(options.ttl ?? DEFAULT_SESSION_TTL_MS, 'session ttl');
  if (ttlMs < MIN_SESSION_TTL_MS || ttlMs > MAX_LEASE_TTL_SECONDS * 1000) {
    throw invalidArgument(
      `session ttl must be between 1s and ${MAX_LEASE_TTL_SECONDS / 86_400} days, got ${formatDuration(ttlMs)}`,
    );
  }
  const ppm = options.clockRateErrorPpm ?? DEFAULT_CLOCK_RATE_ERROR_PPM;
  if (!Number.isFinite(ppm) || ppm < 0 || ppm >= 100_000) {
    throw invalidArgument(`clockRateErrorPpm must be between 0 and 100000, got ${ppm}`);
  }
  const interval =
    options.keepAliveInterval === undefined
      ? undefined
      : toMillis(options.keepAliveInterval, 'keepAliveInterval');
  if (interval !== undefined && (interval <= 0 || interval >= ttlMs)) {
    throw invalidArgument(
      `keepAliveInterval must be positive and shorter than the ttl (${formatDuration(ttlMs)}), got ${formatDuration(interval)}`,
    );
  }
  return {
    ttlSeconds: Math.ceil(ttlMs / 1000),
    keepAliveIntervalMs: interval,
    ppm,
    minMarginMs: toMillis(options.minSafetyMargin ?? DEFAULT_MIN_SAFETY_MARGIN_MS, 'minSafetyMargin'),
    clock: options.clock ?? systemClock,
    signal: options.signal,
  };
}

/**
 * Opens a session: grants a lease and starts keeping it alive.
 *
 * Throws `MUSTER_INVALID_ARGUMENT` for a TTL below 1 s (including 0) or a bad option, `MUSTER_ABORTED`
 * when `signal` fires first (a granted lease is then revoked), and the store's errors
 * (`MUSTER_UNAVAILABLE`, …) when the lease cannot be granted.
 */
export async function openSession(store: Store, options: SessionOptions = {}): Promise<Session> {
  const resolved = resolveOptions(options);
  throwIfAborted(resolved.signal);
  const sent = resolved.clock.monotonic();
  const grant = await store.grantLease(resolved.ttlSeconds, {
    ...(resolved.signal ? { signal: resolved.signal } : {}),
  });
  if (resolved.signal?.aborted) {
    await store.revokeLease(grant.id).catch(() => undefined);
    throw abortedError(resolved.signal);
  }
  return new Session(store, grant.id, grant.ttlSeconds, sent, resolved);
}

/**
 * A live lease and its keep-alive loop. Create with {@link openSession}.
 *
 * `lost` aborts when the session can no longer be relied on: with `MUSTER_SESSION_LOST` when it is
 * lost, with `MUSTER_CLOSED` when it is closed. Code that must not act after the deadline checks
 * {@link Session.isValid} (or compares `clock.monotonic()` with {@link Session.deadline}) right
 * before each effect, because a timer can fire late on a busy event loop.
 */
export class Session implements Listenable<SessionEvents> {
  /** The lease id; attach keys to it with `put(key, value, { lease })`. */
  readonly leaseId: LeaseId;
  /** The TTL the store granted, in ms (at least the requested one on etcd). */
  readonly ttlMs: number;
  /** Period of keep-alives, in ms. */
  readonly keepAliveIntervalMs: number;
  /** How much earlier than `sent + ttl` the deadline falls, in ms. */
  readonly safetyMarginMs: number;
  readonly #store: Store;
  readonly #clock: Clock;
  readonly #ppm: number;
  readonly #minMarginMs: number;
  readonly #controller = new AbortController();
  readonly #events = new Emitter<SessionEvents>();
  #state: SessionState = 'active';
  #deadline: number;
  #renewTimer: TimerHandle | undefined;
  #deadlineTimer: TimerHandle | undefined;
  readonly #inflight = new Set<AbortController>();
  #closing: Promise<void> | undefined;
  #detachSignal: (() => void) | undefined;
  #renewals = 0;

  /** @internal Use {@link openSession}. */
  constructor(
    store: Store,
    leaseId: LeaseId,
    ttlSeconds: number,
    sent: number,
    options: ResolvedSessionOptions,
  ) {
    this.#store = store;
    this.#clock = options.clock;
    this.#ppm = options.ppm;
    this.#minMarginMs = options.minMarginMs;
    this.leaseId = leaseId;
    this.ttlMs = ttlSeconds * 1000;
    this.safetyMarginMs = safetyMargin(this.ttlMs, options.ppm, options.minMarginMs);
    this.keepAliveIntervalMs = options.keepAliveIntervalMs ?? Math.floor(this.ttlMs / 3);
    this.#deadline = sent + this.ttlMs - this.safetyMarginMs;
    this.#armDeadline();
    this.#scheduleRenew(Math.max(0, sent + this.keepAliveIntervalMs - this.#clock.monotonic()));
    this.#detachSignal = onAbort(options.signal, () => void this.close());
  }

  /** `active`, `lost` or `closed`. */
  get state(): SessionState {
    return this.#state;
  }

  /** Aborts when the session is lost (`MUSTER_SESSION_LOST`) or closed (`MUSTER_CLOSED`). */
  get lost(): AbortSignal {
    return this.#controller.signal;
  }

  /** Number of acknowledged keep-alives so far. */
  get renewals(): number {
    return this.#renewals;
  }

  /** The validity deadline in the clock's monotonic ms; the store cannot expire the lease before it. */
  deadline(): number {
    return this.#deadline;
  }

  /** Milliseconds left before the deadline (0 when passed or not active). */
  remaining(): number {
    return this.#state === 'active' ? Math.max(0, this.#deadline - this.#clock.monotonic()) : 0;
  }

  /** True while active and before the deadline — check it right before an effect that needs the lease. */
  isValid(): boolean {
    return this.#state === 'active' && this.#clock.monotonic() < this.#deadline;
  }

  /** Throws the reason of `lost` (`MUSTER_SESSION_LOST` or `MUSTER_CLOSED`) unless {@link isValid}. */
  throwIfInvalid(): void {
    if (this.#state === 'active' && !this.isValid()) this.#lose('deadline passed');
    if (this.#state !== 'active') throw this.#controller.signal.reason as MusterError;
  }

  on<K extends keyof SessionEvents>(event: K, listener: (...args: SessionEvents[K]) => void): () => void {
    return this.#events.on(event, listener);
  }
  once<K extends keyof SessionEvents>(event: K, listener: (...args: SessionEvents[K]) => void): () => void {
    return this.#events.once(event, listener);
  }
  off<K extends keyof SessionEvents>(event: K, listener: (...args: SessionEvents[K]) => void): void {
    this.#events.off(event, listener);
  }

  /**
   * Ends the session: stops the keep-alives, aborts `lost` with `MUSTER_CLOSED`, and revokes the lease
   * (its keys are deleted at once). Idempotent. Never rejects: if the store cannot be reached within
   * one TTL (at most 10 s), the lease simply expires on its own.
   */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  async #close(): Promise<void> {
    const wasActive = this.#state === 'active';
    if (wasActive) {
      this.#state = 'closed';
      this.#controller.abort(
        new MusterError('MUSTER_CLOSED', 'the session was closed', { details: this.#details() }),
      );
    }
    this.#stopTimers();
    {
      const ac = new AbortController();
      const timer = this.#clock.setTimeout(() => ac.abort(), Math.min(this.ttlMs, MAX_ATTEMPT_WAIT_MS));
      try {
        await this.#store.revokeLease(this.leaseId, { signal: ac.signal });
      } catch {
        // Already gone, or unreachable: either way the lease ends within its TTL.
      } finally {
        this.#clock.clearTimeout(timer);
      }
    }
    if (wasActive) this.#events.emit('closed');
  }

  #details(): { lease: LeaseId; ttlMs: number } {
    return { lease: this.leaseId, ttlMs: this.ttlMs };
  }

  #stopTimers(): void {
    if (this.#renewTimer !== undefined) this.#clock.clearTimeout(this.#renewTimer);
    if (this.#deadlineTimer !== undefined) this.#clock.clearTimeout(this.#deadlineTimer);
    this.#renewTimer = this.#deadlineTimer = undefined;
    for (const ac of this.#inflight) ac.abort();
    this.#inflight.clear();
    this.#detachSignal?.();
    this.#detachSignal = undefined;
  }

  #armDeadline(): void {
    if (this.#deadlineTimer !== undefined) this.#clock.clearTimeout(this.#deadlineTimer);
    this.#deadlineTimer = this.#clock.setTimeout(
      () => {
        this.#deadlineTimer = undefined;
        if (this.#state === 'active' && this.#clock.monotonic() >= this.#deadline) {
          this.#lose('no keep-alive was acknowledged before the validity deadline');
        } else if (this.#state === 'active') {
          this.#armDeadline();
        }
      },
      Math.min(MAX_TIMER_MS, this.#deadline - this.#clock.monotonic()),
    );
  }

  #scheduleRenew(delayMs: number): void {
    if (this.#state !== 'active') return;
    if (this.#renewTimer !== undefined) this.#clock.clearTimeout(this.#renewTimer);
    this.#renewTimer = this.#clock.setTimeout(
      () => {
        this.#renewTimer = undefined;
        this.#attempt();
      },
      Math.min(MAX_TIMER_MS, delayMs),
    );
  }

  /**
   * Sends one keep-alive. An attempt that is not answered within one keep-alive period is not
   * aborted (the engine times it out and replaces a dead connection); the next attempt starts at
   * once, and whichever acknowledgement arrives extends the deadline from its own send time.
   */
  #attempt(): void {
    if (this.#state !== 'active') return;
    if (this.#inflight.size >= MAX_KEEPALIVES_IN_FLIGHT) {
      this.#scheduleRenew(this.#retryDelayMs());
      return;
    }
    const sent = this.#clock.monotonic();
    const ac = new AbortController();
    this.#inflight.add(ac);
    let overdue = false;
    const attemptWait = Math.min(this.keepAliveIntervalMs, MAX_ATTEMPT_WAIT_MS);
    const timer = this.#clock.setTimeout(() => {
      overdue = true;
      this.#events.emit(
        'keepAliveFailed',
        new MusterError(
          'MUSTER_TIMEOUT',
          `keep-alive not acknowledged within ${formatDuration(attemptWait)}`,
          { details: this.#details() },
        ),
      );
      this.#scheduleRenew(0);
    }, attemptWait);
    const settle = (): void => {
      this.#clock.clearTimeout(timer);
      this.#inflight.delete(ac);
    };
    this.#store.keepAlive(this.leaseId, { signal: ac.signal }).then(
      (ttlSeconds) => {
        settle();
        this.#acknowledged(sent, ttlSeconds, !overdue);
      },
      (err: unknown) => {
        settle();
        if (this.#state !== 'active') return;
        if (isMusterError(err, 'MUSTER_LEASE_NOT_FOUND')) {
          this.#lose('the store no longer knows the lease (expired or revoked)', err);
          return;
        }
        if (overdue) return; // its successor is already scheduled
        this.#events.emit('keepAliveFailed', err);
        this.#scheduleRenew(this.#retryDelayMs());
      },
    );
  }

  #retryDelayMs(): number {
    return Math.max(50, Math.floor(this.keepAliveIntervalMs / 4));
  }

  #acknowledged(sent: number, ttlSeconds: number, current: boolean): void {
    if (this.#state !== 'active') return;
    const now = this.#clock.monotonic();
    if (now >= this.#deadline) {
      this.#lose('the keep-alive was acknowledged after the validity deadline');
      return;
    }
    if (!(ttlSeconds > 0)) {
      this.#lose(`the store renewed the lease with TTL ${ttlSeconds}`);
      return;
    }
    const ttlMs = ttlSeconds * 1000;
    const candidate = sent + ttlMs - safetyMargin(ttlMs, this.#ppm, this.#minMarginMs);
    if (candidate > this.#deadline) {
      this.#deadline = candidate;
      this.#armDeadline();
    }
    this.#renewals++;
    this.#events.emit('renewed', this.#deadline);
    if (current) this.#scheduleRenew(Math.max(0, sent + this.keepAliveIntervalMs - now));
  }

  #lose(why: string, cause?: unknown): void {
    if (this.#state !== 'active') return;
    this.#state = 'lost';
    const err = new MusterError('MUSTER_SESSION_LOST', `session lost: ${why}`, {
      ...(cause === undefined ? {} : { cause }),
      details: this.#details(),
    });
    this.#stopTimers();
    this.#controller.abort(err);
    this.#events.emit('lost', err);
  }
}
