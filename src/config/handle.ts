/**
 * The process side: a live, verified copy of one configuration's timeline.
 *
 * `openConfig(store, name)` lists the configuration's keys (a linearizable read), then watches them.
 * A verification loop asks the watch for progress notifications and reads the store's head
 * linearizably; see `freshness.ts` for what counts as proof. `at(t)` answers only while the proof is at
 * most `maxStaleness` old, so a process cut off from the store refuses tasks instead of guessing.
 */
import { type Clock, SystemClock, systemClock, type TimerHandle } from '../clock.js';
import { MusterError, throwIfAborted } from '../errors.js';
import type { KeyValue, WatchEvent } from '../store/index.js';
import { type Duration, formatDuration, toMillis } from '../util/duration.js';
import { type ConfigSource, PrefixMirror } from './mirror.js';
import { abortable, onAbort } from '../util/abort.js';
import {
  type ConfigPolicy,
  ConfigKeys,
  type ConfigVersion,
  DEFAULT_POLICY,
  configRoot,
  decodePolicy,
  decodeVersion,
  validateValue,
} from './model.js';
import { ConfigSnapshot, missingConfig, Timeline } from './timeline.js';
import { Listeners } from './listeners.js';

/** A cell nobody ever notifies: `Atomics.wait` on it is a precise sleep. */
const BLOCKER = new Int32Array(new SharedArrayBuffer(4));

/** After a punctual switch, the next activation is armed this much later: 20 ms, once the burst is over. */
export const SWITCH_SETTLE_MS = 20;

/** Verification rounds per `maxStaleness`: 4, so one lost round still leaves three to recover in. */
export const DEFAULT_VERIFY_ROUNDS = 4;

export interface OpenConfigOptions {
  /** Default: the system clock. */
  clock?: Clock;
  /** The key root. Default `'/muster/'` (`DEFAULT_ROOT`), as for membership and partitions. */
  root?: string;
  /** @deprecated Use `root`; read when `root` is not given. */
  rootPrefix?: string;
  /** Interval between verification rounds. Default: `maxStaleness / 4`. */
  verifyInterval?: Duration;
  /**
   * For a punctual `switch` event: wake between this long and half this long before an activation
   * instant, block the event loop until the instant exactly (system clocks only), run the `switch`
   * handlers, then block for another half of it so that the host's other processes switch first.
   * The event loop is thus blocked for up to 1.5 × this around each activation. Default 0: a plain
   * timer (about a millisecond late when idle, more under load). Tasks never need this: they ask
   * `at(their start time)`.
   */
  switchWait?: Duration;
  /** Closes the handle when aborted. */
  signal?: AbortSignal;
}

/** Handle states: `starting` (no proof yet) → `fresh` ⇄ `stale` → `closed`. */
export type ConfigHandleState = 'starting' | 'fresh' | 'stale' | 'closed';

/** Payload of the `switch` event. */
export interface ConfigSwitch<T> {
  readonly name: string;
  readonly version: ConfigVersion<T>;
  readonly previous: ConfigVersion<T> | undefined;
  /** Milliseconds between `activateAt` and the moment the event fired (wall clock). */
  readonly latenessMs: number;
}

export interface ConfigHandleEvents<T> {
  /** A new version became in force (fired at the activation instant, eagerly; never needed for correctness). */
  switch: ConfigSwitch<T>;
  /** A version was received (or cancelled: `cancelled: true`). */
  version: { readonly version: ConfigVersion<T>; readonly cancelled: boolean };
  /** A stored value failed its schema or shape check and was ignored. */
  invalid: { readonly key: string; readonly error: MusterError };
  /** The watch failed and is being re-established (the handle keeps working meanwhile if it can). */
  error: unknown;
}

/** Freshness as reported to callers and to the agent's HTTP API. */
export interface ConfigFreshness {
  readonly state: ConfigHandleState;
  /** Wall-clock instant as of which the handle is proven complete (undefined before any proof). */
  readonly verifiedAt: number | undefined;
  readonly ageMs: number;
  readonly maxStalenessMs: number;
  /** Store revision up to which every change has been applied. */
  readonly revision: number;
}

/**
 * A live configuration. Fail-closed: {@link at} throws `MUSTER_STALE_CONFIG` unless the handle proved,
 * within `maxStaleness`, that it holds every version; `MUSTER_MISSING_CONFIG` when no version is in
 * force; `MUSTER_CLOSED` after {@link close}.
 */
export class ConfigHandle<T = unknown> {
  readonly name: string;
  readonly #clock: Clock;
  readonly #keys: ConfigKeys;
  readonly #verifyIntervalOpt: number | undefined;
  readonly #switchWaitMs: number;
  readonly #mirror: PrefixMirror;
  readonly #listeners = new Listeners<ConfigHandleEvents<T>>();
  #policy: ConfigPolicy = DEFAULT_POLICY;
  #raw = new Map<string, ConfigVersion>();
  /** Versions already checked against the schema of `#checkedFor` (versions are immutable). */
  #checked = new WeakMap<ConfigVersion, boolean>();
  #checkedFor: ConfigPolicy | undefined;
  #timeline = new Timeline<T>([]);
  #switchTimer: TimerHandle | undefined;
  /** What the switch timer was armed for: the wall instant and the monotonic moment it aims at. */
  #armed: { readonly next: number; readonly aim: number } | undefined;
  #lastInForce: ConfigVersion<T> | undefined;
  #ready: Promise<void>;
  #rejectReady!: (err: unknown) => void;
  #closed = false;
  #everListed = false;
  /** Set while a call reads the relay's shared table: events it causes are emitted after the call. */
  #polling = false;

  /** Use {@link openConfig}. */
  constructor(source: ConfigSource, name: string, options: OpenConfigOptions = {}) {
    this.name = name;
    this.#clock = options.clock ?? systemClock;
    this.#keys = new ConfigKeys(name, configRoot(options));
    this.#verifyIntervalOpt =
      options.verifyInterval === undefined ? undefined : toMillis(options.verifyInterval, 'verifyInterval');
    this.#switchWaitMs = toMillis(options.switchWait ?? 0, 'switchWait');
    this.#mirror = new PrefixMirror(
      source,
      this.#keys.prefix,
      {
        onReset: (kvs) => this.#reset(kvs),
        onEvents: (events) => this.#apply(events),
        onError: (err) => this.#emit('error', err),
        onVerified: () => this.#checkSwitch(), // also catches wall-clock jumps past an instant
      },
      {
        clock: this.#clock,
        maxStalenessMs: () => this.#policy.maxStalenessMs,
        verifyIntervalMs: () =>
          this.#verifyIntervalOpt ?? Math.max(5, this.#policy.maxStalenessMs / DEFAULT_VERIFY_ROUNDS),
      },
    );
    this.#ready = new Promise((resolve, reject) => {
      this.#rejectReady = reject;
      this.#mirror.listed.then(resolve, reject);
    });
    this.#ready.catch(() => undefined); // observed through ready()
    // Last, once every field is set: an already-aborted signal closes the handle at once.
    onAbort(options.signal, () => void this.close());
  }

  /** The policy in force (the stored one once read; defaults before). */
  get policy(): ConfigPolicy {
    return this.#policy;
  }

  get state(): ConfigHandleState {
    if (this.#closed) return 'closed';
    this.#poll();
    if (this.#mirror.fresh.verifiedMono === -Infinity) return 'starting';
    return this.#ageMs() <= this.#policy.maxStalenessMs ? 'fresh' : 'stale';
  }

  /** Resolves once the handle holds a verified timeline. Rejects with `MUSTER_CLOSED` or `MUSTER_ABORTED`. */
  async ready(options: { signal?: AbortSignal } = {}): Promise<void> {
    throwIfAborted(options.signal);
    if (options.signal === undefined) return this.#ready;
    const signal = options.signal;
    return abortable(this.#ready, signal);
  }

  /**
   * The version in force at wall-clock instant `t` (default: now). Throws `MUSTER_STALE_CONFIG` when
   * the last proof of completeness is older than `maxStaleness` (or `t` lies beyond what it covers),
   * `MUSTER_MISSING_CONFIG` when no version is in force at `t`, `MUSTER_CLOSED` after close.
   */
  at(t: number = this.#clock.now()): ConfigVersion<T> {
    this.#poll();
    const horizon = this.#horizon();
    if (t > horizon) throw this.#staleError(t);
    const v = this.#timeline.at(t);
    if (v === undefined) throw missingConfig(this.name, t);
    return v;
  }

  /** `at(now)`. */
  current(): ConfigVersion<T> {
    return this.at(this.#clock.now());
  }

  /** Versions scheduled after now, in activation order. Throws `MUSTER_STALE_CONFIG` like {@link at}. */
  upcoming(): readonly ConfigVersion<T>[] {
    this.#poll();
    const now = this.#clock.now();
    if (now > this.#horizon()) throw this.#staleError(now);
    return this.#timeline.after(now);
  }

  /**
   * An immutable snapshot for a batch: `snapshot.at(entryTime)` per entry. Throws like {@link at} when
   * the handle is stale now; the snapshot answers for every `t` up to its `horizon`.
   */
  snapshot(): ConfigSnapshot<T> {
    this.#poll();
    const now = this.#clock.now();
    const horizon = this.#horizon();
    if (now > horizon) throw this.#staleError(now);
    return new ConfigSnapshot(this.name, this.#timeline, horizon, this.#mirror.fresh.applied);
  }

  /** Every version held, stale or not (for display; never for deciding a task). */
  timeline(): Timeline<T> {
    this.#poll();
    return this.#timeline;
  }

  freshness(): ConfigFreshness {
    const state = this.state; // reads the shared table first, if any
    const verified = this.#mirror.fresh.verifiedMono;
    const age = this.#ageMs();
    return {
      state,
      verifiedAt: verified === -Infinity ? undefined : this.#clock.now() - age,
      ageMs: age,
      maxStalenessMs: this.#policy.maxStalenessMs,
      revision: this.#mirror.fresh.applied,
    };
  }

  on<K extends keyof ConfigHandleEvents<T>>(event: K, fn: (payload: ConfigHandleEvents<T>[K]) => void): this {
    this.#listeners.on(event, fn);
    return this;
  }

  off<K extends keyof ConfigHandleEvents<T>>(
    event: K,
    fn: (payload: ConfigHandleEvents<T>[K]) => void,
  ): this {
    this.#listeners.off(event, fn);
    return this;
  }

  /** Stops watching and verifying; idempotent. Later calls to `at()` throw `MUSTER_CLOSED`. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#switchTimer !== undefined) this.#clock.clearTimeout(this.#switchTimer);
    this.#rejectReady(new MusterError('MUSTER_CLOSED', `configuration handle '${this.name}' was closed`));
    await this.#mirror.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  // ---- freshness ---------------------------------------------------------------------------------

  /**
   * Behind a relay with a shared table: takes in what the table holds (a new version, a newer proof)
   * before answering. Listeners are not run inside the caller's call: their events wait for a microtask.
   */
  #poll(): void {
    if (this.#closed || this.#polling) return;
    this.#polling = true;
    try {
      this.#mirror.poll();
    } finally {
      this.#polling = false;
    }
  }

  #emit<K extends keyof ConfigHandleEvents<T>>(event: K, payload: ConfigHandleEvents<T>[K]): void {
    if (this.#polling) queueMicrotask(() => this.#listeners.emit(event, payload));
    else this.#listeners.emit(event, payload);
  }

  #ageMs(): number {
    return this.#clock.monotonic() - this.#mirror.fresh.verifiedMono;
  }

  /** Latest wall instant the timeline vouches for; `-Infinity` when stale. Throws when closed. */
  #horizon(): number {
    if (this.#closed)
      throw new MusterError('MUSTER_CLOSED', `configuration handle '${this.name}' was closed`);
    const age = this.#ageMs();
    const s = this.#policy.maxStalenessMs;
    if (!(age <= s)) return -Infinity;
    return this.#clock.now() - age + s;
  }

  #staleError(t: number): MusterError {
    const verified = this.#mirror.fresh.verifiedMono;
    const why =
      verified === -Infinity
        ? 'has not yet verified it holds every version'
        : `last verified it holds every version ${formatDuration(this.#ageMs())} ago (limit ${formatDuration(this.#policy.maxStalenessMs)})`;
    return new MusterError(
      'MUSTER_STALE_CONFIG',
      `configuration '${this.name}' ${why}; the task is refused rather than run on a possibly outdated version`,
      { details: { config: this.name, at: t, ageMs: this.#ageMs(), revision: this.#mirror.fresh.applied } },
    );
  }

  /** The prefix was (re)listed. */
  #reset(kvs: readonly KeyValue[]): void {
    const before = this.#raw;
    this.#raw = new Map();
    let policy: ConfigPolicy = DEFAULT_POLICY;
    for (const kv of kvs) {
      if (kv.key === this.#keys.policy) policy = this.#decodePolicy(kv.value, kv.key) ?? policy;
    }
    this.#policy = policy;
    const news: ConfigVersion[] = [];
    for (const kv of kvs) {
      if (!kv.key.startsWith(this.#keys.versions)) continue;
      const v = this.#putRaw(kv.key, kv.value);
      const old = before.get(kv.key);
      if (v !== undefined && (old === undefined || old.cancelledAt !== v.cancelledAt)) news.push(v);
    }
    this.#rebuild();
    if (this.#lastInForce === undefined) this.#lastInForce = this.#timeline.at(this.#clock.now());
    // A re-list can bring versions the watch missed: report them like watched ones.
    if (before.size > 0 || this.#everListed) {
      for (const v of news) {
        this.#emit('version', {
          version: v as ConfigVersion<T>,
          cancelled: v.cancelledAt !== undefined,
        });
      }
    }
    this.#everListed = true;
    this.#checkSwitch();
  }

  #apply(events: readonly WatchEvent[]): void {
    let changed = false;
    for (const e of events) {
      const key = e.kv.key;
      if (key === this.#keys.policy) {
        if (e.type === 'put') {
          const p = this.#decodePolicy(e.kv.value, key);
          if (p !== undefined) {
            this.#policy = p;
            changed = true;
          }
        }
        continue;
      }
      if (!key.startsWith(this.#keys.versions)) continue;
      if (e.type === 'delete') {
        const old = this.#raw.get(key);
        if (this.#raw.delete(key)) changed = true;
        if (old !== undefined) this.#emit('version', { version: old as ConfigVersion<T>, cancelled: true });
      } else {
        const v = this.#putRaw(key, e.kv.value);
        changed = true;
        if (v !== undefined) {
          const cancelled = v.cancelledAt !== undefined;
          this.#emit('version', { version: v as ConfigVersion<T>, cancelled });
        }
      }
    }
    if (changed) {
      this.#rebuild();
      this.#checkSwitch();
    }
  }

  #decodePolicy(bytes: Uint8Array, key: string): ConfigPolicy | undefined {
    try {
      return decodePolicy(bytes, key);
    } catch (err) {
      this.#emit('invalid', { key, error: err as MusterError });
      return undefined;
    }
  }

  #putRaw(key: string, bytes: Uint8Array): ConfigVersion | undefined {
    try {
      const v = decodeVersion(bytes, key);
      this.#raw.set(key, v);
      return v;
    } catch (err) {
      this.#raw.delete(key);
      this.#emit('invalid', { key, error: err as MusterError });
      return undefined;
    }
  }

  /** Rebuilds the timeline from the raw versions, leaving out values that fail the schema. */
  #rebuild(): void {
    if (this.#checkedFor !== this.#policy) {
      this.#checked = new WeakMap();
      this.#checkedFor = this.#policy;
    }
    const valid: ConfigVersion<T>[] = [];
    for (const [key, v] of this.#raw) {
      if (v.cancelledAt !== undefined) continue;
      let ok = this.#checked.get(v);
      if (ok === undefined) {
        try {
          validateValue(this.#policy.schema, v.value, `configuration '${this.name}' version ${v.version}`);
          ok = true;
        } catch (err) {
          ok = false;
          this.#emit('invalid', { key, error: err as MusterError });
        }
        this.#checked.set(v, ok);
      }
      if (ok) valid.push(v as ConfigVersion<T>);
    }
    this.#timeline = new Timeline(valid);
  }

  // ---- the eager switch event ---------------------------------------------------------------------

  /** Emits `switch` if the version in force changed, and arms a timer for the next activation. */
  #checkSwitch(): void {
    if (this.#closed) return;
    const now = this.#clock.now();
    const cur = this.#timeline.at(now);
    if (
      cur !== undefined &&
      cur.version !== this.#lastInForce?.version &&
      this.#mirror.fresh.verifiedMono !== -Infinity
    ) {
      const previous = this.#lastInForce;
      this.#lastInForce = cur;
      this.#emit('switch', {
        name: this.name,
        version: cur,
        previous,
        latenessMs: now - cur.activateAt,
      });
    } else if (cur === undefined) {
      this.#lastInForce = undefined;
    }
    const next = this.#timeline.nextActivation(now);
    // Re-checked on every verification round too, so a wall-clock jump cannot lose a switch; the
    // timer is kept when it already aims at the same moment (most rounds), which saves re-arming.
    const aim = next === undefined ? undefined : this.#clock.monotonic() + (next - now);
    if (
      this.#switchTimer !== undefined &&
      aim !== undefined &&
      this.#armed !== undefined &&
      this.#armed.next === next &&
      Math.abs(this.#armed.aim - aim) < 1
    )
      return;
    if (this.#switchTimer !== undefined) this.#clock.clearTimeout(this.#switchTimer);
    this.#switchTimer = undefined;
    this.#armed = undefined;
    if (next === undefined || aim === undefined) return;
    this.#armed = { next, aim };
    const delay = next - now;
    const wait = this.#switchWaitMs;
    if (wait <= 0 || !(this.#clock instanceof SystemClock)) {
      this.#switchTimer = this.#clock.setTimeout(() => this.#timerFired(), delay);
      return;
    }
    // Wake a little early, then block until the instant on a kernel timer: libuv timers have
    // millisecond granularity and, with many processes waking at once, a cold wake-up is late. The
    // early wake-up lands at a random point of the first half of the window, so that a host's
    // processes do not all wake together twice.
    this.#switchTimer = this.#clock.setTimeout(
      () => this.#switchAt(next, wait),
      Math.max(0, delay - wait + (Math.random() * wait) / 2),
    );
  }

  #timerFired(): void {
    this.#switchTimer = undefined;
    this.#armed = undefined;
    this.#checkSwitch();
  }

  /**
   * The punctual switch: everything but reading the clock is done before blocking until `instant`
   * (nothing can change meanwhile: the event loop is blocked); after the handlers, the process blocks
   * for another `wait / 2` before returning to its event loop, and the bookkeeping waits
   * {@link SWITCH_SETTLE_MS}. On a host where 150 processes wake at the same instant, each one's
   * lateness is the CPU time of those that ran before it, so each does as little as it can first.
   */
  #switchAt(instant: number, wait: number): void {
    this.#armed = undefined;
    const cur = this.#timeline.at(instant);
    const previous = this.#lastInForce;
    const fire =
      !this.#closed &&
      cur !== undefined &&
      cur.version !== previous?.version &&
      this.#mirror.fresh.verifiedMono !== -Infinity;
    // After the instant, 150 processes of a host queue for the CPU, each one's lateness the sum of
    // those before it; so all that can be done now is done now, down to the listener list.
    const emit = fire ? this.#listeners.prepare('switch') : undefined;
    const name = this.name;
    const left = instant - this.#clock.now();
    this.#switchTimer = this.#clock.setTimeout(
      () => this.#timerFired(),
      Math.max(0, left) + SWITCH_SETTLE_MS,
    );
    if (left > 0 && left <= wait + 1) Atomics.wait(BLOCKER, 0, 0, left);
    const now = this.#clock.now();
    if (!fire || now < instant) return; // woken early (a wall-clock jump): the re-check handles it
    this.#lastInForce = cur;
    emit?.({ name, version: cur, previous, latenessMs: now - instant });
    // Yield before going back to the event loop: its way back to sleep costs a cold process more
    // CPU than the switch itself, and the host's other processes are waiting for that CPU.
    Atomics.wait(BLOCKER, 0, 0, wait / 2);
  }
}

/**
 * Opens a live handle on configuration `name`. Returns immediately; `await handle.ready()` before
 * serving. The handle never throws from background work: watch failures are retried (event `error`)
 * and show up as `MUSTER_STALE_CONFIG` from {@link ConfigHandle.at} once `maxStaleness` has passed.
 */
export function openConfig<T = unknown>(
  source: ConfigSource,
  name: string,
  options: OpenConfigOptions = {},
): ConfigHandle<T> {
  return new ConfigHandle<T>(source, name, options);
}
