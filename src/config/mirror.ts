/**
 * A verified mirror of one key prefix: list, then watch, plus verification rounds that prove the
 * mirror complete as of a known instant (see `freshness.ts`). The configuration handle is built on
 * it, and so is the per-host relay, which serves many processes from one mirror.
 *
 * A verification round sends a watch progress request and reads the prefix's keys linearizably
 * (keys and modRevisions only). When the keys match the mirror exactly, the mirror is proven complete
 * as of the read's send time at once; otherwise the proof waits until the watch has delivered
 * everything up to the read's revision. A watch that neither answers progress requests nor catches
 * up within `maxStaleness` is closed, and the prefix is listed again.
 *
 * Behind a per-host relay that shares the host's clock, proofs are pushed instead: the relay proves
 * its own mirror complete, sends every event up to revision `r`, then a `proof` batch saying when (on
 * the host's monotonic clock) that proof was taken. Having received everything the relay held, this
 * mirror is complete as of the same instant. While pushed proofs keep arriving, the periodic reads
 * are skipped; when they stop, reads resume, so staleness never depends on the relay's goodwill.
 *
 * A relay's shared table delivers the same things without a wake-up: {@link PrefixMirror.poll} reads
 * it synchronously (the handle calls it whenever it is asked for a version) and applies the content as
 * the events that turn this mirror into it, then the proof. Events that arrive later on the socket
 * for revisions already applied are dropped.
 */
import type { Clock, TimerHandle } from '../clock.js';
import { isMusterError } from '../errors.js';
import {
  type KeyValue,
  type Store,
  type WatchBatch,
  type WatchedChange,
  type WatchedPrefix,
  type WatchEvent,
  type WatchOptions,
  watchPrefix,
} from '../store/index.js';
import { onAbort } from '../util/abort.js';
import { hostMonotonicMs } from '../util/host-clock.js';
import { Freshness } from './freshness.js';

/**
 * A proof pushed by a relay: every event up to `revision` has been delivered on this watch, and the
 * sender's view was proven complete at `provenAtHostMs` on the host's monotonic clock.
 */
export interface ProofBatch {
  readonly type: 'proof';
  readonly revision: number;
  readonly provenAtHostMs: number;
}

/** A relay's shared table: the prefix's full content at `revision` (the mirror derives the events). */
export interface StateBatch {
  readonly type: 'state';
  readonly revision: number;
  readonly kvs: readonly KeyValue[];
}

/** What a mirror's watch yields: a store's batches, plus proofs and content from a relay. */
export type MirrorBatch = WatchBatch | ProofBatch | StateBatch;

/** A store's watch, or a relay's, which may also yield {@link ProofBatch}es. */
export interface MirrorWatch extends AsyncIterable<MirrorBatch> {
  requestProgress(): void;
  close(): void;
  /**
   * A relay watch with a shared table: what the table holds beyond revision `applied`, read now,
   * synchronously (see relay-client.ts). Stores have none.
   */
  poll?(applied: number): MirrorBatch[];
}

export interface MirrorWatchOptions extends WatchOptions {
  /** For a relay: push a proof at least this often (ms). Stores ignore it. */
  proofEveryMs?: number;
}

/** What a mirror needs from a store: the etcd engine, `muster serve`, the memory engine, or a relay. */
export interface ConfigSource extends Pick<Store, 'range' | 'headRevision'> {
  watch(prefix: string, options?: MirrorWatchOptions): MirrorWatch;
  /**
   * True for a relay: its reads are already proofs shared by every process of the host, so the
   * mirror verifies by reads only and sends no progress requests (half the local traffic).
   */
  readonly relayed?: boolean;
}

/** Pushed proofs are asked for every maxStaleness/3 (see the mirror's push deadline). */
export const PUSH_PERIOD_FRACTION = 1 / 3;

/**
 * Pause before listing again after the watch fails: 100 ms, doubling to {@link MAX_RETRY_DELAY_MS}
 * (with the watched view's jitter) — short because staleness is ticking.
 */
export const DEFAULT_RETRY_DELAY_MS = 100;
/** 1 s: the cap of the re-list back-off; a mirror re-lists within about a second of the store's return. */
export const MAX_RETRY_DELAY_MS = 1000;

export interface MirrorHooks {
  /** The prefix was (re)listed: `kvs` replaces everything. */
  onReset(kvs: readonly KeyValue[], revision: number): void;
  /** One batch of watch events, in revision order. */
  onEvents(events: readonly WatchEvent[], revision: number): void;
  /** The watch failed; the mirror lists again after a short pause. */
  onError(err: unknown): void;
  /** The proof of freshness advanced (called once per advance). */
  onVerified?(): void;
}

export interface MirrorSettings {
  readonly clock: Clock;
  /** Read on every use, so a changed policy applies at once. */
  maxStalenessMs(): number;
  verifyIntervalMs(): number;
  /**
   * Least time between two verification reads (default 0). A relay serving many processes sets it so
   * that their requests share reads instead of each causing one.
   */
  minRoundGapMs?: number;
}

export class PrefixMirror {
  readonly prefix: string;
  readonly fresh = new Freshness();
  readonly #source: ConfigSource;
  readonly #hooks: MirrorHooks;
  readonly #s: MirrorSettings;
  readonly #closer = new AbortController();
  readonly #mods = new Map<string, number>();
  readonly #watched: WatchedPrefix<MirrorBatch, MirrorWatchOptions>;
  /** True once the current watch has delivered a pushed proof: periodic reads may then be skipped. */
  #pushed = false;
  #tick: TimerHandle | undefined;
  #roundInFlight = false;
  /** True while a batch is being applied (hooks run synchronously inside). */
  #taking = false;
  /** The proof `onVerified` was last called for. */
  #notifiedMono = -Infinity;
  #lastRoundMono = -Infinity;
  #roundTimer: TimerHandle | undefined;
  #waiters: { readonly mono: number; readonly resolve: () => void }[] = [];
  #listed!: () => void;
  /** Resolves after the first successful list. */
  readonly listed: Promise<void>;

  constructor(source: ConfigSource, prefix: string, hooks: MirrorHooks, settings: MirrorSettings) {
    this.prefix = prefix;
    this.#source = source;
    this.#hooks = hooks;
    this.#s = settings;
    this.listed = new Promise((resolve) => (this.#listed = resolve));
    // The list-then-watch loop is the store's watched view; the mirror adds the freshness proofs.
    // Nothing is fatal to a mirror (a relay's source may come back): it re-lists until closed, and
    // staleness refuses work meanwhile.
    this.#watched = watchPrefix<MirrorBatch, MirrorWatchOptions>(source, prefix, {
      clock: settings.clock,
      backoff: { initial: DEFAULT_RETRY_DELAY_MS, max: MAX_RETRY_DELAY_MS },
      isFatal: () => false,
      listTimeoutMs: () => this.#s.maxStalenessMs(),
      watchOptions: () => ({ proofEveryMs: this.#s.maxStalenessMs() * PUSH_PERIOD_FRACTION }),
      onChange: (change) => this.#change(change),
      onRetry: (err) => {
        this.#pushed = false;
        this.fresh.streamLost();
        if (err !== undefined && !isMusterError(err, 'MUSTER_ABORTED')) this.#hooks.onError(err);
      },
    });
    this.#armTick();
  }

  get closed(): boolean {
    return this.#closer.signal.aborted;
  }

  /** Current key → modRevision of the mirror. */
  get modRevisions(): ReadonlyMap<string, number> {
    return this.#mods;
  }

  /**
   * Resolves once the mirror is proven complete as of a moment at or after monotonic instant `mono`
   * (starting a verification round at once if needed). Never rejects; resolves on close too.
   */
  proofAfter(mono: number): Promise<void> {
    if (this.fresh.verifiedMono >= mono || this.closed) return Promise.resolve();
    return new Promise((resolve) => {
      this.#waiters.push({ mono, resolve });
      this.#round();
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.#closer.abort();
    if (this.#tick !== undefined) this.#s.clock.clearTimeout(this.#tick);
    if (this.#roundTimer !== undefined) this.#s.clock.clearTimeout(this.#roundTimer);
    for (const w of this.#waiters.splice(0)) w.resolve();
    await this.#watched[Symbol.asyncDispose]();
  }

  /** The live watch (while the watched view is watching). */
  get #watch(): MirrorWatch | undefined {
    return this.#watched.watch;
  }

  // ---- verification ------------------------------------------------------------------------------

  #armTick(): void {
    if (this.closed) return;
    const interval = this.#s.verifyIntervalMs();
    const deadline = this.#pushDeadline();
    // With pushed proofs flowing, sleep until one would be overdue instead of waking every interval.
    const delay = this.#pushed ? Math.max(interval, deadline - this.#s.clock.monotonic()) : interval;
    this.#tick = this.#s.clock.setTimeout(() => {
      this.poll(); // a shared table may hold a newer proof than any pushed one
      if (!(this.#pushed && this.#s.clock.monotonic() <= this.#pushDeadline())) this.#round();
      this.#armTick();
    }, delay);
  }

  /**
   * When a pushed proof is overdue: 3/4 of maxStaleness after the last proof. Pushes come every
   * maxStaleness/3 ({@link PUSH_PERIOD_FRACTION}) and reach every watch within half that, so a
   * proof is at most maxStaleness/2 old when the next one lands; past 3/4 they seem to have stopped,
   * and the mirror reads, with a quarter of its budget left.
   */
  #pushDeadline(): number {
    return this.fresh.verifiedMono + (this.#s.maxStalenessMs() * 3) / 4;
  }

  #verified(): void {
    const v = this.fresh.verifiedMono;
    if (this.#waiters.length > 0) {
      const left = [];
      for (const w of this.#waiters) {
        if (w.mono <= v) w.resolve();
        else left.push(w);
      }
      this.#waiters = left;
    }
    if (v !== this.#notifiedMono) {
      this.#notifiedMono = v; // an events batch alone proves nothing new: no call
      this.#hooks.onVerified?.();
    }
    if (this.#waiters.length > 0) this.#round();
  }

  /** One verification round: a progress request and a keys-only linearizable read of the prefix. */
  #round(): void {
    if (this.closed) return;
    const now = this.#s.clock.monotonic();
    const s = this.#s.maxStalenessMs();
    const waiting = Math.min(
      this.fresh.progressSentMono ?? Infinity,
      this.fresh.oldestUncoveredHeadMono ?? Infinity,
    );
    if (this.#watch !== undefined && now - waiting > s) {
      this.fresh.streamLost();
      this.#watched.restart(); // silently dead: the watched view lists again
    }
    if (this.#watch !== undefined && this.#source.relayed !== true && this.fresh.requestProgress(now)) {
      this.#watch.requestProgress();
    }
    if (this.#roundInFlight || this.#roundTimer !== undefined) return;
    const wait = this.#lastRoundMono + (this.#s.minRoundGapMs ?? 0) - now;
    if (wait > 0) {
      this.#roundTimer = this.#s.clock.setTimeout(() => {
        this.#roundTimer = undefined;
        this.#round();
      }, wait);
      return;
    }
    this.#lastRoundMono = now;
    this.#roundInFlight = true;
    this.#withTimeout(s, (signal) => this.#source.range(this.prefix, { keysOnly: true, signal }))
      .then((r) => {
        if (this.#matches(r.kvs)) this.fresh.verifiedAsOf(now);
        else this.fresh.headRead(now, r.revision);
      })
      .catch(() => undefined) // a failed read proves nothing; staleness does the rest
      .finally(() => {
        this.#roundInFlight = false;
        this.#verified();
      });
  }

  #matches(kvs: readonly KeyValue[]): boolean {
    if (kvs.length !== this.#mods.size) return false;
    for (const kv of kvs) if (this.#mods.get(kv.key) !== kv.modRevision) return false;
    return true;
  }

  /** Runs `fn` with a signal that fires after `ms` of the mirror's clock, or on close. */
  async #withTimeout<R>(ms: number, fn: (signal: AbortSignal) => Promise<R>): Promise<R> {
    const ac = new AbortController();
    const timer = this.#s.clock.setTimeout(() => ac.abort(), ms);
    const offClose = onAbort(this.#closer.signal, () => ac.abort());
    try {
      return await fn(ac.signal);
    } finally {
      this.#s.clock.clearTimeout(timer);
      offClose();
    }
  }

  // ---- list and watch ----------------------------------------------------------------------------

  /**
   * Applies what the watch's shared table holds beyond this mirror, if it has one (synchronously;
   * hooks run before this returns). Cheap to call often: the table is read at most once a millisecond.
   */
  poll(): void {
    const watch = this.#watch;
    // Not while a batch is being applied (a hook's listener asking the handle): the table's newer
    // state would land in the middle of it, and the rest of the batch would then undo part of it.
    if (watch?.poll === undefined || this.closed || this.#taking) return;
    const batches = watch.poll(this.fresh.applied);
    if (batches.length === 0) return;
    for (const b of batches) this.#take(b);
    this.#verified();
  }

  #take(batch: MirrorBatch): void {
    this.#taking = true;
    try {
      this.#takeOne(batch);
    } finally {
      this.#taking = false;
    }
  }

  #takeOne(batch: MirrorBatch): void {
    switch (batch.type) {
      case 'progress':
        this.fresh.progressReceived(batch.revision);
        return;
      case 'proof': {
        const age = hostMonotonicMs() - batch.provenAtHostMs;
        if (age < 0) return; // not the same clock after all: such a proof proves nothing
        this.#pushed = true;
        this.fresh.appliedUpTo(batch.revision);
        this.fresh.verifiedAsOf(this.#s.clock.monotonic() - age);
        return;
      }
      case 'state':
        if (batch.revision > this.fresh.applied)
          this.#applyEvents(this.#diff(batch.kvs, batch.revision), batch.revision);
        return;
      default: {
        // A shared table may have delivered some of these already.
        const applied = this.fresh.applied;
        const events = batch.events.some((e) => e.kv.modRevision <= applied)
          ? batch.events.filter((e) => e.kv.modRevision > applied)
          : batch.events;
        this.#applyEvents(events, batch.revision);
      }
    }
  }

  #applyEvents(events: readonly WatchEvent[], revision: number): void {
    for (const e of events) {
      if (e.type === 'put') this.#mods.set(e.kv.key, e.kv.modRevision);
      else this.#mods.delete(e.kv.key);
    }
    if (events.length > 0) this.#hooks.onEvents(events, revision);
    this.fresh.appliedUpTo(revision);
  }

  /** The events that turn this mirror into `kvs` (the prefix's content at `revision`), in revision order. */
  #diff(kvs: readonly KeyValue[], revision: number): WatchEvent[] {
    const events: WatchEvent[] = [];
    const present = new Set<string>();
    for (const kv of kvs) {
      present.add(kv.key);
      if (this.#mods.get(kv.key) !== kv.modRevision) events.push({ type: 'put', kv });
    }
    for (const key of this.#mods.keys()) {
      if (present.has(key)) continue;
      const gone = {
        key,
        value: new Uint8Array(0),
        createRevision: 0,
        modRevision: revision,
        version: 0,
        lease: '0',
      };
      events.push({ type: 'delete', kv: gone });
    }
    return events.sort((a, b) => a.kv.modRevision - b.kv.modRevision);
  }

  /** One change of the watched view: a listing replaces the mirror, batches go through {@link #take}. */
  #change(change: WatchedChange<MirrorBatch>): void {
    if (this.closed) return;
    if (change.type === 'reset') {
      this.#mods.clear();
      for (const kv of change.kvs) this.#mods.set(kv.key, kv.modRevision);
      this.#hooks.onReset(change.kvs, change.revision);
      this.fresh.listed(change.revision, change.sentAt);
      this.#listed();
    } else {
      this.#take(change);
    }
    this.#verified();
  }
}
