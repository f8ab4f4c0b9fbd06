/**
 * The watched, in-memory copy of one service's ownership state (spec, instances, owners, pins), and
 * the assignment computed from it. Every instance computes `assign()` from this snapshot; when the
 * fleet is quiet every instance holds the same snapshot, hence the same assignment.
 *
 * Handles of one process that use the same store object and service share one view (one watch,
 * one assignment computation per change), which is what lets a simulation run a thousand instances.
 */
import { type Clock, systemClock, type TimerHandle } from '../clock.js';
import {
  jsonOf,
  type KeyValue,
  type Store,
  type WatchedChange,
  type WatchedPrefix,
  type WatchEvent,
  watchPrefix,
} from '../store/index.js';
import { assign } from '../placement/index.js';
import type { PlacementInstance } from '../placement/index.js';
import type { Instance } from '../membership/index.js';
import { MalformedRecords, parseInstance, type WarnLogger, withDrain } from '../membership/internal.js';
import { type OwnershipKeys, parseSpec, partitionIds } from './spec.js';
import type { Owner, OwnerRecord, PinRecord, RouteRecord, ServiceSpec } from './types.js';

/**
 * An instance as ownership sees it: membership's record (one parser for both), with its `address`,
 * `state`, `health`, `weight` and `lease`.
 */
export type ViewInstance = Instance;

/** The assignment computed from one snapshot. */
export interface ViewAssignment {
  /**
   * The revision of the snapshot this is the assignment of: the one it was computed from, or a later
   * one that changed nothing placement's result depends on (the maps are then the same objects).
   */
  readonly revision: number;
  readonly partitions: readonly string[];
  readonly byPartition: ReadonlyMap<string, string>;
  readonly byInstance: ReadonlyMap<string, ReadonlySet<string>>;
}

const EMPTY_SET: ReadonlySet<string> = new Set();

/**
 * 5 ms: below this a recomputation is cheap enough to run on every change (hundreds of partitions,
 * tens of instances); above it (100,000 partitions on 1,000 instances take about 2 s) changes are
 * batched so that placement uses at most about half of a core.
 */
export const THROTTLE_ABOVE_MS = 5;

/**
 * 250 ms: a revision wait ({@link ServiceView.afterRevision}) still unmet after this asks the watch for
 * a progress notification, then again at this interval while it stays unmet. The store's revision
 * also moves through writes outside the watched prefix (status records, configurations, other
 * services), which the watch never delivers; without a progress notification such a wait would last
 * until the next change under the prefix. A wait met by the watch's own events (the usual case: the
 * instance's write is under the prefix) costs no request.
 */
export const REVISION_PROGRESS_AFTER_MS = 250;

interface RevisionWaiter {
  readonly revision: number;
  readonly run: () => void;
}

/** One service's watched state. Create with {@link acquireView}. */
export class ServiceView {
  readonly keys: OwnershipKeys;
  readonly #store: Store;
  spec: ServiceSpec | undefined;
  readonly instances = new Map<string, ViewInstance>();
  readonly owners = new Map<string, Owner>();
  readonly ownersByLease = new Map<string, Set<string>>();
  /** The instances whose record says `leaving`: id → the lease of their session. */
  readonly leaving = new Map<string, string>();
  readonly pins = new Map<string, string>();
  /** Routing keys pinned to one instance (`routes/<key>`), for the proxy. */
  readonly routes = new Map<string, RouteRecord>();
  /**
   * Instances an operator drained (`drain/<id>`, `muster drain`). The key is separate from the
   * instance's record, so the instance rewriting its record cannot clear it; `instances` shows such
   * an instance as `draining`.
   */
  readonly drains = new Set<string>();
  /** The instance records as written, before a drain key overrides their state. */
  readonly #records = new Map<string, ViewInstance>();
  /** The revision the snapshot reflects. */
  revision = 0;
  #assignment: ViewAssignment | undefined;
  #dirty = true;
  readonly #listeners = new Set<() => void>();
  #notifyQueued = false;
  #revisionWaiters: RevisionWaiter[] = [];
  #progressTimer: TimerHandle | undefined;
  #closed = false;
  #watched: WatchedPrefix | undefined;
  #ready: Promise<void> | undefined;
  refs = 0;
  readonly #clock: Clock;
  #lastComputeMs = 0;
  #lastComputeAt = 0;
  #trailing: TimerHandle | undefined;
  /** The last computation put no partition over its cap (placement's `stats.overCap === 0`). */
  #withinCaps = false;
  #ids: { readonly spec: ServiceSpec; readonly ids: readonly string[] } | undefined;

  readonly #malformed: MalformedRecords;

  constructor(store: Store, keys: OwnershipKeys, clock: Clock = systemClock, logger?: WarnLogger) {
    this.#store = store;
    this.keys = keys;
    this.#clock = clock;
    this.#malformed = new MalformedRecords(logger);
  }

  /**
   * Resolves after the first full read; the watched view (store's `watchPrefix`) then keeps the
   * snapshot current, re-listing after a compaction or a broken watch. Rejects with the store's error
   * when the first listing fails (a later call tries again), `MUSTER_CLOSED` after close.
   */
  ready(): Promise<void> {
    if (this.#ready !== undefined) return this.#ready;
    let settle!: { resolve: () => void; reject: (err: unknown) => void };
    const ready = new Promise<void>((resolve, reject) => (settle = { resolve, reject }));
    let listed = false;
    const watched = watchPrefix(this.#store, this.keys.prefix, {
      clock: this.#clock,
      onChange: (change) => {
        this.#take(change);
        if (!listed) {
          listed = true;
          settle.resolve();
        }
      },
      onRetry: (err) => {
        if (listed) return;
        // The first listing failed: report it to the joiner, as a one-shot read would.
        watched.close();
        this.#watched = undefined;
        this.#ready = undefined;
        settle.reject(err);
      },
    });
    this.#watched = watched;
    this.#ready = ready;
    watched.ready().catch((err: unknown) => {
      if (listed) return;
      if (this.#watched === watched) {
        this.#watched = undefined;
        this.#ready = undefined;
      }
      settle.reject(err);
    });
    return ready;
  }

  /** Reads the state once, without watching (for one-shot readers such as the CLI). */
  loadOnce(): Promise<void> {
    return this.#load();
  }

  /**
   * Calls `listener` (coalesced, on a later turn) after each change of what the view tracks (spec,
   * instances, drains, owners, pins, routes); returns an unsubscribe function. A batch of events on
   * keys the view ignores (a hand-off's state, anything else under the prefix) and a progress
   * notification move {@link revision} without calling it: wait for a revision with
   * {@link afterRevision}.
   */
  subscribe(listener: () => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /**
   * Calls `run` once, on a later turn, when the view reflects `revision` or later — whatever brought
   * it there: a tracked change, events on keys the view ignores, a progress notification, a re-list.
   * While it is unmet the watch is asked for progress every {@link REVISION_PROGRESS_AFTER_MS}. After
   * {@link close} it is never called. `run` must not throw (a throw is swallowed).
   */
  afterRevision(revision: number, run: () => void): void {
    if (this.#closed) return;
    this.#revisionWaiters.push({ revision, run });
    if (this.revision >= revision) this.#settleRevisions();
    else
      this.#progressTimer ??= this.#clock.setTimeout(() => this.#askProgress(), REVISION_PROGRESS_AFTER_MS);
  }

  #askProgress(): void {
    this.#progressTimer = undefined;
    if (this.#closed || this.#revisionWaiters.length === 0) return;
    this.#watched?.requestProgress();
    this.#progressTimer = this.#clock.setTimeout(() => this.#askProgress(), REVISION_PROGRESS_AFTER_MS);
  }

  /** Runs (on a later turn) the revision waiters the current revision meets. */
  #settleRevisions(): void {
    if (this.#revisionWaiters.length === 0) return;
    const due: RevisionWaiter[] = [];
    const rest: RevisionWaiter[] = [];
    for (const w of this.#revisionWaiters) (w.revision <= this.revision ? due : rest).push(w);
    if (due.length === 0) return;
    this.#revisionWaiters = rest;
    if (rest.length === 0 && this.#progressTimer !== undefined) {
      this.#clock.clearTimeout(this.#progressTimer);
      this.#progressTimer = undefined;
    }
    setImmediate(() => {
      if (this.#closed) return;
      for (const w of due) {
        try {
          w.run();
        } catch {
          // a throwing waiter never stops the others
        }
      }
    });
  }

  /**
   * True when placement gives `instance` partitions: its state is `active` (no drain key), its weight
   * above 0 and — with `unhealthy: 'drain'`, the default — its health not `failing`.
   */
  placedActive(instance: ViewInstance): boolean {
    const unhealthyDrains = (this.spec?.settings?.unhealthy ?? 'drain') === 'drain';
    return (
      instance.state === 'active' &&
      instance.weight > 0 &&
      !(unhealthyDrains && instance.health === 'failing')
    );
  }

  /** The owner partitions held under `lease`, as the snapshot says. */
  heldBy(lease: string): ReadonlySet<string> {
    return this.ownersByLease.get(lease) ?? EMPTY_SET;
  }

  /**
   * The assignment for the current snapshot, recomputed only when something changed — and, for
   * fleets where a recomputation is expensive (over {@link THROTTLE_ABOVE_MS}), at most once per the
   * duration of the last one: in between, the last assignment is returned and a trailing
   * recomputation is scheduled, so that when the fleet is quiet every instance ends on the assignment
   * of the same final snapshot. A stale assignment costs moves at worst, never safety: ownership is
   * decided by the owner keys.
   */
  assignment(): ViewAssignment {
    if (!this.#dirty && this.#assignment !== undefined) {
      if (this.#assignment.revision !== this.revision) {
        this.#assignment = { ...this.#assignment, revision: this.revision };
      }
      return this.#assignment;
    }
    if (this.#assignment !== undefined && this.#lastComputeMs > THROTTLE_ABOVE_MS) {
      const wait = this.#lastComputeAt + this.#lastComputeMs - this.#clock.monotonic();
      if (wait > 0) {
        this.#trailing ??= this.#clock.setTimeout(() => {
          this.#trailing = undefined;
          if (this.#closed) return;
          this.assignment();
          this.#changed();
        }, wait);
        return this.#assignment;
      }
    }
    const started = performance.now();
    const partitions = this.#partitionIds();
    const instances: PlacementInstance[] = [];
    for (const i of this.instances.values()) {
      const active = this.placedActive(i);
      instances.push({
        id: i.id,
        weight: i.weight > 0 ? i.weight : 1,
        state: active ? 'active' : 'draining',
      });
    }
    const currentOwners = new Map<string, string>();
    for (const [p, o] of this.owners) currentOwners.set(p, o.instance);
    const settings = this.spec?.settings;
    const result = assign({
      partitions,
      instances,
      pins: this.pins,
      currentOwners,
      settings: {
        ...(settings?.epsilon === undefined ? {} : { epsilon: settings.epsilon }),
        ...(settings?.seed === undefined ? {} : { seed: settings.seed }),
      },
    });
    const byInstance = new Map<string, Set<string>>();
    for (const [p, i] of result.assignments) {
      let set = byInstance.get(i);
      if (set === undefined) byInstance.set(i, (set = new Set()));
      set.add(p);
    }
    this.#assignment = { revision: this.revision, partitions, byPartition: result.assignments, byInstance };
    this.#withinCaps = result.stats.overCap === 0;
    this.#dirty = false;
    this.#lastComputeMs = performance.now() - started;
    this.#lastComputeAt = this.#clock.monotonic();
    return this.#assignment;
  }

  /**
   * The spec's partition ids, expanded once per spec record (not per recomputation: an agent runs
   * without an optimizing compiler, where expanding 64 ids showed in every hand-off's profile).
   */
  #partitionIds(): readonly string[] {
    const spec = this.spec;
    if (spec === undefined) return [];
    if (this.#ids?.spec !== spec) this.#ids = { spec, ids: partitionIds(spec.partitions) };
    return this.#ids.ids;
  }

  /** Stops the watch. */
  close(): void {
    this.#closed = true;
    if (this.#trailing !== undefined) this.#clock.clearTimeout(this.#trailing);
    if (this.#progressTimer !== undefined) this.#clock.clearTimeout(this.#progressTimer);
    this.#watched?.close();
    this.#listeners.clear();
    this.#revisionWaiters = [];
  }

  async #load(): Promise<void> {
    const r = await this.#store.range(this.keys.prefix);
    this.#reset(r.kvs, r.revision);
  }

  /**
   * One change of the watched view: a reset replaces the snapshot, events update it. Listeners hear
   * of a batch only when one of its events touched what the view tracks: the other agents' and the
   * proxies' writes of keys the view ignores cost every watcher a decode, not a reconciliation.
   * Revision waiters are settled by every change, tracked or not.
   */
  #take(change: WatchedChange): void {
    if (change.type === 'reset') {
      this.#reset(change.kvs, change.revision);
    } else {
      let tracked = false;
      if (change.type === 'events') for (const e of change.events) if (this.#apply(e)) tracked = true;
      if (change.revision > this.revision) this.revision = change.revision;
      if (tracked) this.#changed();
    }
    this.#settleRevisions();
  }

  #reset(kvs: readonly KeyValue[], revision: number): void {
    this.#dirty = true; // before the records: no shortcut of #apply compares them with an old assignment
    this.spec = undefined;
    this.instances.clear();
    this.leaving.clear();
    this.#records.clear();
    this.drains.clear();
    this.owners.clear();
    this.ownersByLease.clear();
    this.pins.clear();
    this.routes.clear();
    for (const kv of kvs) this.#apply({ type: 'put', kv });
    this.revision = revision;
    this.#dirty = true;
    this.#changed();
  }

  /** Applies one event; true when it touched what the view tracks (false: a key the view ignores). */
  #apply(e: WatchEvent): boolean {
    const kv = e.kv;
    const key = kv.key;
    const rest = key.slice(this.keys.prefix.length);
    const put = e.type === 'put';
    if (!put) this.#malformed.clear(key);
    if (key === this.keys.spec) {
      this.spec = put ? this.#decode(kv, parseSpec(kv), 'service spec') : undefined;
    } else if (rest.startsWith('instances/')) {
      const id = rest.slice('instances/'.length);
      const instance = put
        ? this.#decode(kv, parseInstance(this.keys.service, kv), 'instance record')
        : undefined;
      if (instance === undefined) {
        this.#records.delete(id);
        this.instances.delete(id);
      } else {
        this.#records.set(id, instance);
        this.instances.set(id, this.#withDrain(id, instance));
      }
      if (instance?.state === 'leaving') this.leaving.set(id, instance.lease);
      else this.leaving.delete(id);
    } else if (rest.startsWith('drain/')) {
      const id = rest.slice('drain/'.length);
      if (put) this.drains.add(id);
      else this.drains.delete(id);
      const record = this.#records.get(id);
      if (record === undefined) return true;
      this.instances.set(id, this.#withDrain(id, record));
    } else if (rest.startsWith('owners/')) {
      const partition = rest.slice('owners/'.length);
      const old = this.owners.get(partition);
      if (old !== undefined) {
        const set = this.ownersByLease.get(old.lease);
        set?.delete(partition);
        if (set?.size === 0) this.ownersByLease.delete(old.lease);
      }
      if (!put) this.owners.delete(partition);
      else {
        const owner = this.#decodeOwner(partition, kv);
        this.owners.set(partition, owner);
        let set = this.ownersByLease.get(owner.lease);
        if (set === undefined) this.ownersByLease.set(owner.lease, (set = new Set()));
        set.add(partition);
        // Placement reads only who owns each partition: the owner rewriting its record (`moving`
        // before a release, its address) leaves the assignment as it is. Every instance of the
        // fleet sees each of these writes, and recomputed placement for each.
        if (old !== undefined && old.instance === owner.instance) return true;
        // Nor does an acquisition by the instance the current assignment chose (placement's
        // "stable under an acquisition as assigned", src/placement/assign.ts): each hand-off made
        // every instance recompute once per partition its successors took.
        if (old === undefined && this.#asAssigned(partition, owner.instance)) return true;
      }
    } else if (rest.startsWith('pins/')) {
      const partition = rest.slice('pins/'.length);
      const pin = put ? this.#decode(kv, parseTarget<PinRecord>(kv), 'pin record') : undefined;
      if (pin !== undefined) this.pins.set(partition, pin.instance);
      else this.pins.delete(partition);
    } else if (rest.startsWith('routes/')) {
      const routeKey = rest.slice('routes/'.length);
      const route = put ? this.#decode(kv, parseTarget<RouteRecord>(kv), 'route record') : undefined;
      if (route !== undefined) this.routes.set(routeKey, { instance: route.instance });
      else this.routes.delete(routeKey);
      // Routes do not change the assignment.
      return true;
    } else {
      return false;
    }
    this.#dirty = true;
    return true;
  }

  /**
   * True when the assignment is that of the current snapshot (nothing changed since it was computed)
   * with no partition over its cap, and gives `partition` to `instance`.
   */
  #asAssigned(partition: string, instance: string): boolean {
    return !this.#dirty && this.#withinCaps && this.#assignment?.byPartition.get(partition) === instance;
  }

  /** As the fleet sees it: membership's drain rule (active + a drain key = `draining`). */
  #withDrain(id: string, record: ViewInstance): ViewInstance {
    return withDrain(record, this.drains.has(id));
  }

  /** `value`, or (when the record could not be read) `undefined`, logged once with its key. */
  #decode<T>(kv: KeyValue, value: T | undefined, what: string): T | undefined {
    if (value === undefined) this.#malformed.report(kv, what);
    else this.#malformed.clear(kv.key);
    return value;
  }

  /**
   * An owner key. A malformed record still marks the partition as taken — the key's existence is
   * what fences, and nobody can acquire it until it is deleted or its lease ends — but it names no
   * instance (`''`) and carries no address or moving flag, so nothing routes to it.
   */
  #decodeOwner(partition: string, kv: KeyValue): Owner {
    const raw = this.#decode(kv, parseOwnerRecord(kv), 'owner record');
    return {
      partition,
      instance: raw?.instance ?? '',
      since: raw?.since ?? '',
      ...(raw?.address === undefined ? {} : { address: raw.address }),
      ...(raw?.moving === undefined ? {} : { moving: raw.moving }),
      token: kv.createRevision,
      lease: kv.lease,
    };
  }

  #changed(): void {
    if (this.#notifyQueued) return;
    this.#notifyQueued = true;
    setImmediate(() => {
      this.#notifyQueued = false;
      for (const l of [...this.#listeners]) l();
    });
  }
}

function safeJson(kv: KeyValue): Record<string, unknown> | undefined {
  try {
    const raw = jsonOf<unknown>(kv.value, kv.key);
    return raw !== null && typeof raw === 'object' && !Array.isArray(raw)
      ? (raw as Record<string, unknown>)
      : undefined;
  } catch {
    return undefined;
  }
}

/** `{ instance }` records (pins, routes): `undefined` unless `instance` is a non-empty string. */
function parseTarget<T extends { instance: string }>(kv: KeyValue): T | undefined {
  const raw = safeJson(kv);
  return typeof raw?.instance === 'string' && raw.instance !== '' ? (raw as T) : undefined;
}

/**
 * An owner record: `undefined` unless it has a string `instance`; `since` defaults to `''`, and an
 * `address` that is not a string or a `moving` that is not a boolean makes the record malformed.
 */
export function parseOwnerRecord(kv: KeyValue): OwnerRecord | undefined {
  const raw = safeJson(kv);
  if (raw === undefined || typeof raw.instance !== 'string' || raw.instance === '') return undefined;
  if (raw.address !== undefined && typeof raw.address !== 'string') return undefined;
  if (raw.moving !== undefined && typeof raw.moving !== 'boolean') return undefined;
  return {
    instance: raw.instance,
    since: typeof raw.since === 'string' ? raw.since : '',
    ...(raw.address === undefined ? {} : { address: raw.address }),
    ...(raw.moving === undefined ? {} : { moving: raw.moving }),
  };
}

const views = new WeakMap<Store, Map<string, ServiceView>>();

/** The shared view of `keys.prefix` on `store` (created on first use); pair with {@link releaseView}. */
export function acquireView(
  store: Store,
  keys: OwnershipKeys,
  clock?: Clock,
  logger?: WarnLogger,
): ServiceView {
  let byPrefix = views.get(store);
  if (byPrefix === undefined) views.set(store, (byPrefix = new Map<string, ServiceView>()));
  let view = byPrefix.get(keys.prefix);
  if (view === undefined) byPrefix.set(keys.prefix, (view = new ServiceView(store, keys, clock, logger)));
  view.refs++;
  return view;
}

/** Drops one reference; the last one closes the view. */
export function releaseView(store: Store, view: ServiceView): void {
  if (--view.refs > 0) return;
  view.close();
  views.get(store)?.delete(view.keys.prefix);
}

export { EMPTY_SET };
