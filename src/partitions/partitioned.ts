/**
 * `joinPartitioned`: an instance that owns the partitions placement assigns to it, with fencing
 * tokens, and converges by itself when instances join, leave, crash or become unhealthy.
 *
 * Per partition, locally: (absent) → acquiring → running → stopping → releasing → (absent). The
 * protocol, the invariants and the argument for them are in docs/partitions.md.
 */
import { type Clock, systemClock, type TimerHandle } from '../clock.js';
import { abortedError, invalidArgument, isMusterError, MusterError, throwIfAborted } from '../errors.js';
import { abortable, onAbort } from '../util/abort.js';
import { jsonBytes } from '../store/index.js';
import { checkAddress, checkNotes } from '../membership/index.js';
import type { Compare, Store, TxnOp } from '../store/index.js';
import { Emitter, type Listenable } from '../util/emitter.js';
import { toMillis } from '../util/duration.js';
import { defaultInstanceId, type OwnershipMember, registerInstance } from './registration.js';
import { checkSegment, ownershipKeys, type OwnershipKeys, publishSpec } from './spec.js';
import {
  type AcquireContext,
  type AcquireHandler,
  type AssumedPartition,
  MAX_HANDOFF_BYTES,
  DEFAULT_MAX_CONCURRENT_ACQUIRES,
  DEFAULT_MAX_CONCURRENT_MOVES,
  DEFAULT_PARTITION_TTL_MS,
  DEFAULT_RETRY_DELAY_MS,
  DEFAULT_STOP_TIMEOUT_MS,
  type JoinPartitionedOptions,
  type OwnerFields,
  type PartitionedEvents,
  type PartitionedState,
  type PartitionsLogger,
  type ReleaseHandler,
} from './types.js';
import { acquireView, EMPTY_SET, releaseView, type ServiceView, type ViewAssignment } from './view.js';

/** 64 owner keys per transaction: with their compares, within etcd's 128 operations per transaction. */
const OWNER_KEYS_PER_TXN = 64;

/**
 * How long, at most, this instance's rebalancing moves wait in a row for other instances' leaves to
 * be taken over (see `PartitionedHandle`'s `#handoffsFirst`): leaves that hang, or follow one
 * another, must not stop rebalancing for good.
 */
const LEAVE_FIRST_MS = 10_000;

interface Slot {
  readonly partition: string;
  phase: 'acquiring' | 'running' | 'stopping' | 'releasing';
  token: number;
  since: number;
  controller?: AbortController;
  /** Settles when `onAcquire`'s promise settles, with what it resolved with after the abort. */
  work?: Promise<unknown>;
  /** Settles when the work has stopped (after abort). */
  stopped?: Promise<void>;
  /** What the owner published with `publish()`, merged; kept in the owner record. */
  published?: OwnerFields;
  /** The last `publish()` write, so that writes apply in call order. */
  publishing?: Promise<void>;
  /** What the work or `onRelease` returned to hand over (a graceful release writes it). */
  handoff?: Uint8Array;
}

interface Resolved {
  readonly id: string;
  readonly ttlMs: number;
  readonly stopTimeoutMs: number;
  readonly maxMoves: number;
  readonly maxAcquires: number;
  readonly retryDelayMs: number;
  readonly rejoin: boolean;
  readonly clock: Clock;
  readonly logger: PartitionsLogger;
  readonly onAcquire: AcquireHandler;
  readonly onRelease: ReleaseHandler | undefined;
}

/** Writes warnings and errors to stderr as JSON lines; info is dropped. */
export const stderrLogger: PartitionsLogger = {
  info: () => undefined,
  warn: (obj, msg) => process.stderr.write(`${JSON.stringify({ level: 'warn', msg, ...obj })}\n`),
  error: (obj, msg) => process.stderr.write(`${JSON.stringify({ level: 'error', msg, ...obj })}\n`),
};

function positiveInt(value: number | undefined, fallback: number, what: string): number {
  const v = value ?? fallback;
  if (!Number.isSafeInteger(v) || v < 1)
    throw invalidArgument(`${what} must be a positive integer, got ${String(v)}`);
  return v;
}

function resolve(options: JoinPartitionedOptions): Resolved {
  if (typeof options?.onAcquire !== 'function')
    throw invalidArgument('onAcquire(partition, { token, signal }) is required');
  if (options.onRelease !== undefined && typeof options.onRelease !== 'function') {
    throw invalidArgument('onRelease must be a function');
  }
  const id = options.id ?? defaultInstanceId();
  checkSegment(id, 'instance id');
  const ttlMs = toMillis(options.ttl ?? DEFAULT_PARTITION_TTL_MS, 'ttl');
  if (ttlMs < 1000) throw invalidArgument(`ttl must be at least 1s, got ${ttlMs}ms`);
  if (options.weight !== undefined && !(Number.isFinite(options.weight) && options.weight >= 0)) {
    throw invalidArgument(`weight must be a finite number ≥ 0, got ${String(options.weight)}`);
  }
  return {
    id,
    ttlMs,
    stopTimeoutMs: toMillis(options.stopTimeout ?? DEFAULT_STOP_TIMEOUT_MS, 'stopTimeout'),
    maxMoves: positiveInt(options.maxConcurrentMoves, DEFAULT_MAX_CONCURRENT_MOVES, 'maxConcurrentMoves'),
    maxAcquires: positiveInt(
      options.maxConcurrentAcquires,
      DEFAULT_MAX_CONCURRENT_ACQUIRES,
      'maxConcurrentAcquires',
    ),
    retryDelayMs: toMillis(options.retryDelay ?? DEFAULT_RETRY_DELAY_MS, 'retryDelay'),
    rejoin: options.rejoin ?? true,
    clock: options.clock ?? systemClock,
    logger: options.logger ?? stderrLogger,
    onAcquire: options.onAcquire,
    onRelease: options.onRelease,
  };
}

/**
 * Joins `options.service` as a partitioned instance: writes the spec if `options.partitions` differs
 * from the stored one, registers the instance under a new session, and starts converging.
 *
 * Throws `MUSTER_INVALID_ARGUMENT` for bad options or a bad partition set (nothing is written),
 * `MUSTER_DUPLICATE_INSTANCE` when a live instance has the same id, `MUSTER_ABORTED` when `signal`
 * fires first, and the store's errors (`MUSTER_UNAVAILABLE`, …).
 */
export async function joinPartitioned(
  store: Store,
  options: JoinPartitionedOptions,
): Promise<PartitionedHandle> {
  const resolved = resolve(options);
  const keys = ownershipKeys(options.root, options.service);
  const spec =
    options.partitions === undefined
      ? undefined
      : { partitions: options.partitions, ...(options.settings ? { settings: options.settings } : {}) };
  const signal = options.signal;
  throwIfAborted(signal);
  const viewStore = options.viewStore ?? store;
  const view = acquireView(viewStore, keys, resolved.clock, resolved.logger);
  try {
    await abortable(view.ready(), signal);
    if (spec !== undefined) await publishSpec(store, keys, spec, resolved.logger, resolved.id);
    throwIfAborted(signal);
    const member = await registerInstance(store, {
      service: keys.service,
      root: options.root,
      id: resolved.id,
      ttlMs: resolved.ttlMs,
      clock: resolved.clock,
      weight: options.weight ?? 1,
      address: options.address,
      checks: options.checks,
      tags: options.tags,
    });
    if (signal?.aborted) {
      // Aborted while registering: leave at once rather than hand back a handle nobody asked for.
      await member.leave().catch(() => undefined);
      throw abortedError(signal);
    }
    return new PartitionedHandle(store, keys, view, member, resolved, options);
  } catch (err) {
    releaseView(viewStore, view);
    throw err;
  }
}

/** A partitioned instance. See {@link joinPartitioned}. */
export class PartitionedHandle implements Listenable<PartitionedEvents> {
  /** This instance's id. */
  readonly id: string;
  readonly service: string;
  readonly #store: Store;
  readonly #keys: OwnershipKeys;
  readonly #view: ServiceView;
  readonly #o: Resolved;
  readonly #options: JoinPartitionedOptions;
  readonly #events: Emitter<PartitionedEvents>;
  readonly #slots = new Map<string, Slot>();
  /** Partition → revision of this instance's last write to its owner key; the view is trusted past it. */
  readonly #pending = new Map<string, number>();
  /** Revisions of {@link #pending} a reconciliation waits for the view to reach (one wait each). */
  readonly #revisionWaits = new Set<number>();
  readonly #inflight = new Set<Promise<void>>();
  #member: OwnershipMember | undefined;
  #generation = 0;
  #state: PartitionedState = 'active';
  #moves = 0;
  #acquires = 0;
  #queued = false;
  #retryTimer: TimerHandle | undefined;
  /**
   * Other instances seen `leaving`, by their session's lease: the partitions each held then. Kept
   * until none of them is held under that lease or without an owner, and the lease is no longer
   * seen leaving. By lease, not id: an instance that rejoins under the same id is a new session.
   */
  readonly #leaves = new Map<string, readonly string[]>();
  /** Monotonic ms since when some leave has been pending without a break (undefined: none is). */
  #leavesPendingSince: number | undefined;
  #leaveTimer: TimerHandle | undefined;
  #unsubscribe: () => void;
  #closing: Promise<void> | undefined;
  /** Set by {@link drain}; kept across a rejoin. */
  #draining = false;
  /** Aborted by `close({ force: true })`: stop waiting for work that ignores its signal. */
  readonly #force = new AbortController();
  #drainWaiters: (() => void)[] = [];
  /** The notes published in the instance record (kept across a rejoin). */
  #notes: Readonly<Record<string, string>> = {};

  /** @internal Use {@link joinPartitioned}. */
  constructor(
    store: Store,
    keys: OwnershipKeys,
    view: ServiceView,
    member: OwnershipMember,
    resolved: Resolved,
    options: JoinPartitionedOptions,
  ) {
    this.#store = store;
    this.#keys = keys;
    this.#view = view;
    this.#o = resolved;
    this.#options = options;
    this.id = resolved.id;
    this.service = keys.service;
    this.#events = new Emitter((err, event) =>
      resolved.logger.error({ err: String(err), event: String(event) }, 'a partitions listener threw'),
    );
    this.#unsubscribe = view.subscribe(() => this.#schedule());
    this.#attach(member);
    // Last, once every field is set: an already-aborted signal starts the (graceful) leave at once.
    onAbort(options.signal, () => void this.close());
  }

  /** `active`, `draining`, `leaving`, `lost` (rejoining after a lost session) or `closed`. */
  get state(): PartitionedState {
    return this.#state;
  }

  /** Partitions placement assigns to this instance in the current snapshot. */
  get assigned(): readonly string[] {
    return [...(this.#view.assignment().byInstance.get(this.id) ?? EMPTY_SET)];
  }

  /** Partitions this instance owns and works on now, with their fencing tokens. */
  get assumed(): ReadonlyMap<string, AssumedPartition> {
    const out = new Map<string, AssumedPartition>();
    for (const s of this.#slots.values()) {
      if (s.phase === 'running') out.set(s.partition, { token: s.token, since: s.since });
    }
    return out;
  }

  /** The current session's lease (changes after a rejoin); `undefined` between sessions. */
  get leaseId(): string | undefined {
    return this.#member?.session.leaseId;
  }

  on<K extends keyof PartitionedEvents>(
    event: K,
    listener: (...args: PartitionedEvents[K]) => void,
  ): () => void {
    return this.#events.on(event, listener);
  }
  once<K extends keyof PartitionedEvents>(
    event: K,
    listener: (...args: PartitionedEvents[K]) => void,
  ): () => void {
    return this.#events.once(event, listener);
  }
  off<K extends keyof PartitionedEvents>(event: K, listener: (...args: PartitionedEvents[K]) => void): void {
    this.#events.off(event, listener);
  }

  /**
   * Replaces the notes of this instance's record (membership's `InstanceRecord.notes`: what the instance
   * tells operators, e.g. why it handed a partition on); `{}` removes them. They are kept and
   * published again after a rejoin. Throws `MUSTER_INVALID_ARGUMENT` for bad notes (nothing
   * written), `MUSTER_CLOSED` after leave, `MUSTER_SESSION_LOST` between sessions (the next session
   * publishes them), and the store's errors.
   */
  async setNotes(notes: Readonly<Record<string, string>>): Promise<void> {
    checkNotes(notes);
    if (this.#closing !== undefined) throw new MusterError('MUSTER_CLOSED', `instance '${this.id}' has left`);
    this.#notes = { ...notes };
    const member = this.#member;
    if (member === undefined) {
      throw new MusterError('MUSTER_SESSION_LOST', `instance '${this.id}' is between sessions`);
    }
    await member.update({ notes: this.#notes });
  }

  /**
   * Marks the instance `draining`: it receives no partitions and hands its own over at the throttle's
   * pace (`maxConcurrentMoves`). Resolves when it owns nothing. The mark is sticky: a session lost
   * meanwhile does not undo it — the instance rejoins as `draining` — and a record that cannot be
   * written yet (store unreachable, session lost) is written when it can. Throws `MUSTER_CLOSED`
   * after close.
   */
  async drain(): Promise<void> {
    if (this.#closing !== undefined) throw new MusterError('MUSTER_CLOSED', `instance '${this.id}' has left`);
    this.#draining = true;
    if (this.#state !== 'lost') this.#setState('draining');
    this.#schedule();
    if (this.#member !== undefined) await this.#publishDraining(this.#member);
    if (this.#slots.size === 0) return;
    await new Promise<void>((resolve) => this.#drainWaiters.push(resolve));
  }

  /**
   * Writes `draining` into the instance record of `member`, retrying while the store is unreachable;
   * gives up without error once that session is lost (the rejoin writes it into the new record) or
   * the instance leaves.
   */
  async #publishDraining(member: OwnershipMember): Promise<void> {
    while (this.#closing === undefined && this.#member === member && member.session.isValid()) {
      try {
        await member.setState('draining');
        return;
      } catch (err) {
        if (isMusterError(err, 'MUSTER_SESSION_LOST') || isMusterError(err, 'MUSTER_CLOSED')) return;
        this.#o.logger.warn(
          { service: this.service, instance: this.id, err: String(err) },
          'could not mark the instance draining; retrying',
        );
        await this.#o.clock.sleep(this.#o.retryDelayMs);
      }
    }
  }

  /**
   * Leaves gracefully: marks the instance `leaving`, stops the work of every partition at once and
   * deletes its owner keys (others take over immediately), then deletes the record and ends the
   * session. Idempotent; never rejects (an unreachable store means the lease expires instead).
   */
  leave(): Promise<void> {
    this.#closing ??= this.#leave();
    return this.#closing;
  }

  /**
   * Same as {@link leave}; with `force: true` (also while a graceful close is under way) it stops waiting
   * for work that ignores its signal past `stopTimeout`: the owner keys are deleted and the session
   * ended anyway, each abandoned partition is reported as a `MUSTER_STOP_TIMEOUT` `error` event, and
   * ending that work (killing its process) is the caller's job — at-most-one-owner no longer covers it.
   */
  close(options: { force?: boolean } = {}): Promise<void> {
    if (options.force === true) this.#force.abort();
    return this.leave();
  }

  /** `close({ force: true })`. */
  destroy(): Promise<void> {
    return this.close({ force: true });
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.leave();
  }

  // ---- lifecycle -------------------------------------------------------------------------------

  #setState(state: PartitionedState): void {
    if (this.#state === state) return;
    this.#state = state;
    this.#events.emit('state', state);
  }

  #attach(member: OwnershipMember): void {
    this.#member = member;
    const generation = ++this.#generation;
    onAbort(member.session.lost, () => this.#onSessionLost(generation));
    this.#schedule();
  }

  #onSessionLost(generation: number): void {
    const member = this.#member;
    if (generation !== this.#generation || member === undefined) return;
    if (this.#state === 'leaving' || this.#state === 'closed') return;
    const validUntil = member.session.deadline();
    this.#member = undefined;
    this.#generation++;
    const stops: Promise<void>[] = [];
    for (const slot of this.#slots.values()) {
      if (slot.phase === 'acquiring') continue;
      this.#events.emit('lost', slot.partition, slot.token, 'session-lost', validUntil);
      stops.push(this.#stopWork(slot));
    }
    this.#slots.clear();
    this.#pending.clear();
    this.#moves = this.#acquires = 0;
    this.#setState('lost');
    this.#o.logger.warn(
      { service: this.service, instance: this.id, partitions: stops.length },
      'session lost: stopped all partition work without touching the store',
    );
    this.#notifyDrained();
    if (this.#o.rejoin) this.#track(Promise.all(stops).then(() => this.#rejoin()));
  }

  async #rejoin(): Promise<void> {
    while (this.#closing === undefined) {
      try {
        const member = await registerInstance(this.#store, {
          service: this.service,
          root: this.#options.root,
          id: this.id,
          ttlMs: this.#o.ttlMs,
          clock: this.#o.clock,
          weight: this.#options.weight ?? 1,
          address: this.#options.address,
          checks: this.#options.checks,
          tags: this.#options.tags,
          notes: this.#notes,
          state: this.#draining ? 'draining' : 'active',
        });
        if (this.#closing !== undefined) {
          await member.leave();
          return;
        }
        this.#setState(this.#draining ? 'draining' : 'active');
        this.#attach(member);
        this.#o.logger.warn({ service: this.service, instance: this.id }, 'rejoined with a new session');
        return;
      } catch (err) {
        // Typically MUSTER_DUPLICATE_INSTANCE until the old lease expires, or the store unreachable.
        if (!isMusterError(err, 'MUSTER_DUPLICATE_INSTANCE')) {
          this.#o.logger.warn(
            { service: this.service, instance: this.id, err: String(err) },
            'rejoin failed; retrying',
          );
        }
        await this.#o.clock.sleep(this.#o.retryDelayMs);
      }
    }
  }

  async #leave(): Promise<void> {
    const member = this.#member;
    this.#setState('leaving');
    if (this.#retryTimer !== undefined) this.#o.clock.clearTimeout(this.#retryTimer);
    if (this.#leaveTimer !== undefined) this.#o.clock.clearTimeout(this.#leaveTimer);
    // Publish `leaving` while the work stops (in parallel: observers see it even if stopping is
    // slow), then delete the record and every owner key at one revision: the successors see the
    // instance gone and the partitions free in the same watch event and take over at once.
    const marking =
      member !== undefined && member.session.isValid()
        ? member.setState('leaving').catch(() => undefined)
        : Promise.resolve();
    const running = [...this.#slots.values()].filter((slot) => slot.phase === 'running');
    for (const slot of running) slot.phase = 'stopping';
    await this.#markMovingAll(running, member);
    await Promise.all(running.map((slot) => this.#stopWork(slot)));
    // close({ force }) stops waiting for in-flight acquires whose work never settles.
    await abortable(Promise.allSettled([...this.#inflight]), this.#force.signal).catch(() => undefined);
    for (const slot of this.#slots.values()) if (slot.stopped) await slot.stopped;
    const generation = this.#generation;
    if (member !== undefined && member.session.isValid()) {
      for (const slot of running) slot.phase = 'releasing';
      const deleted = await this.#deleteKeys(running, member).catch(() => false);
      if (deleted) for (const slot of running) this.#events.emit('released', slot.partition, slot.token);
    }
    await marking;
    if (generation === this.#generation) {
      this.#member = undefined;
      this.#generation++;
    }
    if (member !== undefined) await member.leave();
    this.#unsubscribe();
    releaseView(this.#options.viewStore ?? this.#store, this.#view);
    this.#slots.clear();
    this.#setState('closed');
    this.#notifyDrained();
  }

  /**
   * Deletes the instance record and the owner keys of `slots`, each key guarded by its token and the
   * record by this session's lease, in transactions of up to 64 keys (the record goes with the
   * first), each with the hand-off state of its slot. Resolves to true when every key was deleted or
   * was already gone.
   */
  async #deleteKeys(slots: readonly Slot[], member: OwnershipMember): Promise<boolean> {
    const record = this.#keys.instance(this.id);
    const chunks: Slot[][] = [];
    // 32 keys: with their hand-off puts and the record, within etcd's 128 operations per transaction.
    for (let i = 0; i < slots.length; i += 32) chunks.push(slots.slice(i, i + 32));
    if (chunks.length === 0) chunks.push([]);
    const results = await Promise.all(
      chunks.map(async (chunk, i) => {
        const compares: Compare[] = chunk.map((s) => ({
          key: this.#keys.owner(s.partition),
          target: 'createRevision',
          op: '=',
          value: s.token,
        }));
        const ops: TxnOp[] = chunk.flatMap((s) => this.#releaseOps(s.partition, s.handoff));
        if (i === 0) {
          compares.push({ key: record, target: 'lease', op: '=', value: member.session.leaseId });
          ops.push({ type: 'delete', selector: { key: record } });
        }
        const r = await this.#store.txn(compares, ops);
        if (r.succeeded) return true;
        // A key changed hands (an operator deleted it) or the record is gone: one guarded delete per key.
        await Promise.all(
          chunk.map((s) => this.#deleteKey(s.partition, s.token, this.#generation, s.handoff)),
        );
        return true;
      }),
    );
    return results.every(Boolean);
  }

  #track(p: Promise<void>): void {
    const tracked = p.catch((err: unknown) => {
      this.#events.emit('error', err);
    });
    this.#inflight.add(tracked);
    void tracked.finally(() => this.#inflight.delete(tracked));
  }

  #notifyDrained(): void {
    if (this.#slots.size > 0 && this.#state !== 'closed' && this.#state !== 'lost') return;
    const waiters = this.#drainWaiters;
    this.#drainWaiters = [];
    for (const w of waiters) w();
  }

  // ---- convergence -----------------------------------------------------------------------------

  #schedule(): void {
    if (this.#queued) return;
    this.#queued = true;
    setImmediate(() => {
      this.#queued = false;
      try {
        this.#reconcile();
      } catch (err) {
        this.#events.emit('error', err);
      }
    });
  }

  #retryLater(): void {
    if (this.#retryTimer !== undefined || this.#closing !== undefined) return;
    this.#retryTimer = this.#o.clock.setTimeout(() => {
      this.#retryTimer = undefined;
      this.#schedule();
    }, this.#o.retryDelayMs);
  }

  /**
   * True when the view has caught up with this instance's own last write to `partition`. When it has
   * not, a reconciliation is scheduled for when it does: the revision may be reached by a batch the
   * view's listeners do not hear of (keys it ignores, a progress notification — a failed transaction
   * returns the store's head revision, which writes outside the prefix may have moved).
   */
  #current(partition: string): boolean {
    const rev = this.#pending.get(partition);
    if (rev === undefined) return true;
    if (this.#view.revision < rev) {
      if (!this.#revisionWaits.has(rev)) {
        this.#revisionWaits.add(rev);
        this.#view.afterRevision(rev, () => {
          this.#revisionWaits.delete(rev);
          this.#schedule();
        });
      }
      return false;
    }
    this.#pending.delete(partition);
    return true;
  }

  /** One pass: compare the snapshot with the local slots and start what is needed. */
  #reconcile(): void {
    const member = this.#member;
    const state = this.#state;
    if (member === undefined || (state !== 'active' && state !== 'draining')) return;
    if (!member.session.isValid()) return;
    const view = this.#view;
    const assignment = view.assignment();
    const mine = assignment.byInstance.get(this.id) ?? EMPTY_SET;
    const lease = member.session.leaseId;
    const rebalanceWaits = state === 'active' && this.#handoffsFirst(assignment);

    for (const slot of this.#slots.values()) {
      if (slot.phase !== 'running') continue;
      const p = slot.partition;
      if (this.#current(p)) {
        const owner = view.owners.get(p);
        if (owner === undefined || owner.token !== slot.token) {
          this.#o.logger.warn(
            { service: this.service, instance: this.id, partition: p, token: slot.token },
            'owner key disappeared while working: stopping at once',
          );
          this.#events.emit('lost', p, slot.token, 'key-lost', this.#o.clock.monotonic());
          this.#slots.delete(p);
          this.#track(this.#stopWork(slot));
          continue;
        }
      }
      if (
        !mine.has(p) &&
        this.#moves < this.#o.maxMoves &&
        !(rebalanceWaits && this.#rebalancing(p, assignment))
      ) {
        this.#track(this.#release(slot, false));
      }
    }

    for (const p of mine) {
      if (this.#acquires >= this.#o.maxAcquires) break;
      if (this.#slots.has(p) || !this.#current(p)) continue;
      const owner = view.owners.get(p);
      if (owner === undefined) this.#track(this.#acquire(p));
      else if (owner.lease === lease) this.#adopt(p, owner.token);
    }

    for (const p of view.heldBy(lease)) {
      if (this.#slots.has(p) || mine.has(p) || !this.#current(p)) continue;
      const owner = view.owners.get(p);
      if (owner !== undefined) this.#track(this.#deleteKey(p, owner.token, this.#generation));
    }
    this.#notifyDrained();
  }

  /**
   * True while another instance's leave is being taken over: some partition a leaving instance held
   * when this one saw it leave (known by its session's lease) is still held under that lease or has
   * no owner, this instance is one placement gives partitions to (`placedActive`), and the leaves
   * have not been pending for {@link LEAVE_FIRST_MS} in a row. Its releases that only rebalance
   * ({@link #rebalancing}) then wait: a leave lets partitions return to their first choice as each
   * instance's fair share grows, and those moves — of partitions that have a working owner — would
   * slow the leave's hand-offs, of partitions that have none.
   */
  #handoffsFirst(assignment: ViewAssignment): boolean {
    const view = this.#view;
    if (view.leaving.size === 0 && this.#leaves.size === 0) {
      this.#leavesPendingSince = undefined;
      return false;
    }
    const leaving = new Set<string>();
    for (const [id, lease] of view.leaving) {
      if (id === this.id) continue;
      leaving.add(lease);
      if (!this.#leaves.has(lease)) this.#leaves.set(lease, [...view.heldBy(lease)]);
    }
    let pending = false;
    for (const [lease, partitions] of this.#leaves) {
      const open = partitions.some((p) => {
        const o = view.owners.get(p);
        return (o === undefined && assignment.byPartition.has(p)) || o?.lease === lease;
      });
      if (open) pending = true;
      else if (!leaving.has(lease)) this.#leaves.delete(lease);
    }
    if (!pending) {
      this.#leavesPendingSince = undefined;
      return false;
    }
    const now = this.#o.clock.monotonic();
    const since = (this.#leavesPendingSince ??= now);
    const self = view.instances.get(this.id);
    if (now - since >= LEAVE_FIRST_MS || self === undefined || !view.placedActive(self)) return false;
    if (this.#leaveTimer === undefined) {
      this.#leaveTimer = this.#o.clock.setTimeout(
        () => {
          this.#leaveTimer = undefined;
          this.#schedule();
        },
        since + LEAVE_FIRST_MS - now,
      );
    }
    return true;
  }

  /**
   * True when releasing `partition` (running here, assigned elsewhere) only rebalances: it is still
   * in the spec and no pin decides where it goes (an operator's pin, or the partition's removal,
   * is a move that does not wait).
   */
  #rebalancing(partition: string, assignment: ViewAssignment): boolean {
    const to = assignment.byPartition.get(partition);
    return to !== undefined && this.#view.pins.get(partition) !== to;
  }

  async #acquire(partition: string): Promise<void> {
    const member = this.#member;
    if (member === undefined) return;
    const generation = this.#generation;
    const slot: Slot = { partition, phase: 'acquiring', token: 0, since: 0 };
    this.#slots.set(partition, slot);
    this.#acquires++;
    const since = this.#o.clock.now();
    try {
      const r = await this.#store.txn(
        [
          { key: this.#keys.owner(partition), target: 'createRevision', op: '=', value: 0 },
          { key: this.#keys.instance(this.id), target: 'lease', op: '=', value: member.session.leaseId },
        ],
        [
          {
            type: 'put',
            key: this.#keys.owner(partition),
            value: jsonBytes({ instance: this.id, since: new Date(since).toISOString() }),
            lease: member.session.leaseId,
          },
          // The previous owner's hand-off, taken in the same transaction (see #releaseOps).
          { type: 'range', selector: { key: this.#handoffKey(partition) } },
          { type: 'delete', selector: { key: this.#handoffKey(partition) } },
        ],
      );
      const taken = r.succeeded ? r.results[1] : undefined;
      const state = taken?.type === 'range' ? taken.kvs[0]?.value : undefined;
      if (generation !== this.#generation) return;
      this.#pending.set(partition, r.revision);
      if (!r.succeeded) {
        this.#slots.delete(partition);
        return;
      }
      slot.token = r.revision;
      slot.since = since;
      if (this.#state !== 'active' && this.#state !== 'draining') {
        this.#slots.delete(partition);
        await this.#deleteKey(partition, r.revision, generation, state);
        return;
      }
      if (!member.session.isValid()) {
        this.#slots.delete(partition);
        return;
      }
      this.#startWork(slot, member, state);
    } catch (err) {
      if (generation === this.#generation) {
        this.#slots.delete(partition);
        this.#retryLater();
      }
      if (!isMusterError(err) || !err.retryable) throw err;
    } finally {
      if (generation === this.#generation) {
        this.#acquires--;
        this.#schedule();
      }
    }
  }

  /** Takes over an owner key that already carries this session's lease (an acquire whose reply was lost). */
  #adopt(partition: string, token: number): void {
    const member = this.#member;
    if (member === undefined || !member.session.isValid()) return;
    const slot: Slot = { partition, phase: 'acquiring', token, since: this.#o.clock.now() };
    this.#slots.set(partition, slot);
    this.#startWork(slot, member);
  }

  #startWork(slot: Slot, member: OwnershipMember, state?: Uint8Array): void {
    const controller = new AbortController();
    const session = member.session;
    const { partition, token } = slot;
    const valid = (): boolean => !controller.signal.aborted && session.isValid();
    const context: AcquireContext = {
      token,
      signal: controller.signal,
      valid,
      assertOwner: () => {
        if (!valid()) {
          throw new MusterError('MUSTER_NOT_OWNER', `this instance no longer owns partition '${partition}'`, {
            details: { partition, token },
          });
        }
      },
      deadline: () => session.deadline(),
      publish: (fields) => this.#publish(slot, session.leaseId, valid, fields),
      state,
    };
    slot.phase = 'running';
    slot.controller = controller;
    slot.work = (async () => {
      const result = await this.#o.onAcquire(partition, context);
      // Only what the work resolves with after the abort is a hand-off (a handler that returns at once
      // returns before it).
      return controller.signal.aborted ? result : undefined;
    })().catch((err: unknown) => {
      if (controller.signal.aborted) return undefined;
      this.#o.logger.error({ service: this.service, partition, err: String(err) }, 'onAcquire failed');
      this.#events.emit('error', err);
    });
    this.#events.emit('acquired', partition, token);
  }

  /**
   * `AcquireContext.publish`: rewrites the owner record with `fields` merged over the published ones,
   * fenced on the key's createRevision being the slot's token, under the same lease. Writes of one
   * slot are chained so that they apply in call order.
   */
  #publish(slot: Slot, lease: string, valid: () => boolean, fields: OwnerFields): Promise<void> {
    try {
      checkOwnerFields(fields);
    } catch (err) {
      return Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
    return this.#publishAll([slot], lease, valid, fields);
  }

  /**
   * Rewrites the owner records of `slots` (as {@link #publish}: each merged over what it published,
   * each key fenced on its token, under `lease`) in one transaction, after every write in flight
   * on any of them. Rejects `MUSTER_NOT_OWNER` (naming the first slot) when the compare fails for
   * any key: then none was written.
   */
  #publishAll(
    slots: readonly Slot[],
    lease: string,
    valid: () => boolean,
    fields: OwnerFields,
  ): Promise<void> {
    const notOwner = (): MusterError => {
      const { partition, token } = slots[0] as Slot;
      return new MusterError('MUSTER_NOT_OWNER', `this instance no longer owns partition '${partition}'`, {
        details: { partition, token },
      });
    };
    const write = async (): Promise<void> => {
      if (!valid()) throw notOwner();
      const compares: Compare[] = [];
      const ops: TxnOp[] = [];
      const nexts = new Map<Slot, OwnerFields>();
      for (const slot of slots) {
        const { partition, token } = slot;
        const next: OwnerFields = {
          ...slot.published,
          ...(fields.address === undefined ? {} : { address: fields.address }),
          ...(fields.moving === undefined ? {} : { moving: fields.moving }),
        };
        const key = this.#keys.owner(partition);
        const stored = this.#view.owners.get(partition);
        const since =
          stored !== undefined && stored.token === token && stored.since !== ''
            ? stored.since
            : new Date(slot.since).toISOString();
        compares.push({ key, target: 'createRevision', op: '=', value: token });
        ops.push({ type: 'put', key, value: jsonBytes({ instance: this.id, since, ...next }), lease });
        nexts.set(slot, next);
      }
      const r = await this.#store.txn(compares, ops);
      if (!r.succeeded) throw notOwner();
      for (const [slot, next] of nexts) slot.published = next;
    };
    const before = slots.map((slot) => slot.publishing ?? Promise.resolve());
    const run = (before.length === 1 ? (before[0] as Promise<void>) : Promise.all(before)).then(write, write);
    const settled = run.catch(() => undefined);
    for (const slot of slots) slot.publishing = settled;
    return run;
  }

  /** Aborts the work and waits (up to the stop timeout, then on, loudly) until it has stopped. */
  #stopWork(slot: Slot): Promise<void> {
    if (slot.stopped !== undefined) return slot.stopped;
    slot.controller?.abort(
      new MusterError('MUSTER_NOT_OWNER', `partition '${slot.partition}' is being released`),
    );
    const onRelease = this.#o.onRelease;
    const done = Promise.allSettled([
      slot.work ?? Promise.resolve(),
      onRelease === undefined ? Promise.resolve() : (async () => await onRelease(slot.partition))(),
    ]).then((results) => {
      for (const r of results) if (r.status === 'rejected') this.#events.emit('error', r.reason);
      const [work, released] = results.map((r) => (r.status === 'fulfilled' ? r.value : undefined));
      this.#keepHandoff(slot, released ?? work);
    });
    slot.stopped = (async () => {
      let timer: TimerHandle | undefined;
      const timedOut = await Promise.race([
        done.then(() => false),
        new Promise<boolean>((resolve) => {
          timer = this.#o.clock.setTimeout(() => resolve(true), this.#o.stopTimeoutMs);
        }),
      ]);
      if (timer !== undefined) this.#o.clock.clearTimeout(timer);
      if (timedOut) {
        const err = new MusterError(
          'MUSTER_STOP_TIMEOUT',
          `the work on partition '${slot.partition}' did not stop within ${this.#o.stopTimeoutMs}ms; keeping the partition until it does`,
          { details: { partition: slot.partition, token: slot.token } },
        );
        this.#o.logger.error({ service: this.service, partition: slot.partition }, err.message);
        this.#events.emit('error', err);
        let off = (): void => undefined;
        const forced = await Promise.race([
          done.then(() => false),
          new Promise<boolean>((resolve) => (off = onAbort(this.#force.signal, () => resolve(true)))),
        ]);
        off();
        if (forced) {
          const abandoned = new MusterError(
            'MUSTER_STOP_TIMEOUT',
            `close({ force }): abandoned the work on partition '${slot.partition}', which ignored its signal; releasing the partition anyway`,
            { details: { partition: slot.partition, token: slot.token } },
          );
          this.#o.logger.error({ service: this.service, partition: slot.partition }, abandoned.message);
          this.#events.emit('error', abandoned);
        }
      }
    })();
    return slot.stopped;
  }

  /** Stops the work, then deletes the owner key (guarded by its token). */
  async #release(slot: Slot, leaving: boolean): Promise<void> {
    const generation = this.#generation;
    if (!leaving) this.#moves++;
    slot.phase = 'stopping';
    try {
      await this.#markMoving(slot, this.#member);
      await this.#stopWork(slot);
      if (generation !== this.#generation) return;
      slot.phase = 'releasing';
      for (;;) {
        try {
          await this.#deleteKey(slot.partition, slot.token, generation, slot.handoff);
          break;
        } catch (err) {
          const member = this.#member;
          if (generation !== this.#generation || member === undefined || !member.session.isValid()) return;
          if (leaving) return;
          this.#events.emit('error', err);
          await this.#o.clock.sleep(this.#o.retryDelayMs);
        }
      }
      if (generation !== this.#generation) return;
      this.#slots.delete(slot.partition);
      this.#events.emit('released', slot.partition, slot.token);
    } finally {
      if (!leaving && generation === this.#generation) this.#moves--;
      this.#schedule();
    }
  }

  async #deleteKey(
    partition: string,
    token: number,
    generation: number,
    handoff?: Uint8Array,
  ): Promise<void> {
    const key = this.#keys.owner(partition);
    const r = await this.#store.txn(
      [{ key, target: 'createRevision', op: '=', value: token }],
      this.#releaseOps(partition, handoff),
    );
    if (generation === this.#generation) this.#pending.set(partition, r.revision);
  }

  /** `services/<s>/handoff/<partition>`: the state between a release and the next acquisition. */
  #handoffKey(partition: string): string {
    return `${this.#keys.prefix}handoff/${partition}`;
  }

  /**
   * The operations that release `partition`: delete the owner key and, with state, write the hand-off
   * key in the same transaction, which the caller guards on the owner key's createRevision being its
   * token. So only the current owner can write a hand-off (a stale one's compare fails), the key
   * appears exactly when the owner key goes, and the next owner, whose acquisition needs the owner
   * key gone, takes it (reads and deletes it) in its acquiring transaction.
   */
  #releaseOps(partition: string, handoff: Uint8Array | undefined): TxnOp[] {
    const ops: TxnOp[] = [{ type: 'delete', selector: { key: this.#keys.owner(partition) } }];
    if (handoff !== undefined) ops.push({ type: 'put', key: this.#handoffKey(partition), value: handoff });
    return ops;
  }

  /** Keeps what the work or `onRelease` returned as the slot's hand-off (bytes or a string, within the limit). */
  #keepHandoff(slot: Slot, value: unknown): void {
    if (typeof value !== 'string' && !(value instanceof Uint8Array)) return;
    const bytes = typeof value === 'string' ? new TextEncoder().encode(value) : value;
    if (bytes.length > MAX_HANDOFF_BYTES) {
      const err = new MusterError(
        'MUSTER_VALUE_TOO_LARGE',
        `the state handed over for partition '${slot.partition}' is ${bytes.length} bytes, more than the ${MAX_HANDOFF_BYTES}-byte limit; the next owner starts without it`,
        { details: { partition: slot.partition, token: slot.token, bytes: bytes.length } },
      );
      this.#o.logger.error({ service: this.service, partition: slot.partition }, err.message);
      this.#events.emit('error', err);
      return;
    }
    slot.handoff = bytes;
  }

  /**
   * Publishes `moving: true` before a graceful release stops the work, so that the proxy holds the
   * partition's requests from then on; best effort (a failure only means the proxy learns of the move
   * when the owner key goes).
   */
  async #markMoving(slot: Slot, member: OwnershipMember | undefined): Promise<void> {
    await this.#markMovingAll([slot], member);
  }

  /**
   * {@link #markMoving} for every slot of a leave, in one transaction per {@link OWNER_KEYS_PER_TXN}
   * keys: one store write, and one watch event for every instance of the fleet, instead of one per
   * partition. A transaction that fails (a key changed hands meanwhile) falls back to one write per
   * slot, so the others are still marked.
   */
  async #markMovingAll(slots: readonly Slot[], member: OwnershipMember | undefined): Promise<void> {
    if (member === undefined || !member.session.isValid()) return;
    const session = member.session;
    const valid = (): boolean => session.isValid();
    const live = slots.filter((slot) => slot.controller !== undefined);
    const one = (slot: Slot): Promise<void> =>
      this.#publishAll([slot], session.leaseId, valid, { moving: true }).catch(() => undefined);
    const chunks: Slot[][] = [];
    for (let i = 0; i < live.length; i += OWNER_KEYS_PER_TXN)
      chunks.push(live.slice(i, i + OWNER_KEYS_PER_TXN));
    await Promise.all(
      chunks.map((chunk) =>
        chunk.length === 1
          ? one(chunk[0] as Slot)
          : this.#publishAll(chunk, session.leaseId, valid, { moving: true }).catch(async () => {
              if (valid()) await Promise.all(chunk.map(one));
            }),
      ),
    );
  }
}

/** Validates what `publish()` takes; throws `MUSTER_INVALID_ARGUMENT` naming the problem. */
function checkOwnerFields(fields: OwnerFields): void {
  if (fields === null || typeof fields !== 'object') {
    throw invalidArgument('publish() takes an object: { address?, moving? }');
  }
  if (fields.address !== undefined) checkAddress(fields.address);
  if (fields.moving !== undefined && typeof fields.moving !== 'boolean') {
    throw invalidArgument(`moving must be true or false, got ${JSON.stringify(fields.moving)}`);
  }
}
