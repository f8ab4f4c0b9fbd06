/**
 * `watchInstances(store, service)`: a cached, watched view of a service's instances — a decoder
 * over the store's watched view (`watchPrefix`).
 *
 * The watched view lists the instances, then watches from the listed revision + 1. When the watch
 * fails (disconnect, compaction, store restart) it lists again, and this view reports the difference
 * against its cache as ordinary joined/left/changed changes, flagged `resync`, so consumers never
 * miss a change of state even when they miss the events in between.
 *
 * It also watches the service's drain keys (`drain/<id>`, written by `muster drain`) — a second
 * watched view of its own prefix, so the view never lists owners, pins or routes — and reports an
 * `active` record with a drain key as `draining` (membership's one drain rule, `withDrain`): a
 * drained instance gets nothing new from discovery, as it gets nothing new from placement.
 */
import { type Clock, systemClock } from '../clock.js';
import { MusterError } from '../errors.js';
import {
  type KeyValue,
  type Store,
  type WatchedChange,
  type WatchedPrefix,
  watchPrefix,
} from '../store/index.js';
import { Emitter, type Listenable } from '../util/emitter.js';
import { serviceKeys } from './keys.js';
import { MalformedRecords, type WarnLogger } from './malformed.js';
import { type Instance, parseInstance, withDrain } from './types.js';
import { onAbort } from '../util/abort.js';

/** One change of the view. */
export type InstanceChange =
  | { readonly type: 'joined'; readonly instance: Instance }
  | { readonly type: 'left'; readonly instance: Instance }
  | { readonly type: 'changed'; readonly instance: Instance; readonly previous: Instance };

/** What the view yields: the whole current set plus what changed since the previous update. */
export interface InstancesUpdate {
  /** Store revision the view reflects (the later of its two watches: records and drain keys). */
  readonly revision: number;
  /** Every instance, sorted by id. */
  readonly instances: readonly Instance[];
  readonly changes: readonly InstanceChange[];
  /** True for the first update of an iterator and after a re-list (changes are then a diff). */
  readonly resync: boolean;
}

export interface WatchInstancesOptions {
  /** Key root. Default: `/muster/`. */
  root?: string;
  /** Closes the view. */
  signal?: AbortSignal;
  /** For the re-list back-off. Default: the system clock. */
  clock?: Clock;
  /** Where malformed records are reported (once per key and write). Default: a JSON line on stderr. */
  logger?: WarnLogger;
}

/** Events of an {@link InstanceView}. */
export interface InstanceViewEvents extends Record<string, unknown[]> {
  update: [update: InstancesUpdate];
  /** The watch failed and the view is re-listing (it keeps serving its cache meanwhile). */
  error: [error: unknown];
}

/**
 * 50 ms, doubling to 2 s (with the watched view's jitter): re-list quickly after a blip without
 * hammering a store that is down.
 */
export const RESYNC_BACKOFF_MS = { initial: 50, max: 2000 } as const;

/**
 * Opens a watched view of `service`. It starts listing at once; await {@link InstanceView.ready}
 * for the first snapshot. Throws `MUSTER_INVALID_ARGUMENT` for a malformed service name.
 */
export function watchInstances(
  store: Store,
  service: string,
  options: WatchInstancesOptions = {},
): InstanceView {
  return new InstanceView(store, service, options);
}

interface Subscriber {
  queue: InstancesUpdate[];
  wake: (() => void) | undefined;
}

/** A cached view of a service's instances; an async iterable of {@link InstancesUpdate}s. */
export class InstanceView implements AsyncIterable<InstancesUpdate>, Listenable<InstanceViewEvents> {
  readonly service: string;
  readonly prefix: string;
  /**
   * Resolves after the first listing. While the store is unreachable the view keeps retrying, so this
   * waits; it rejects with `MUSTER_CLOSED` if the view or the store is closed first.
   */
  readonly ready: Promise<void>;
  /** `<root>services/<service>/drain/`: the operator's drain keys the view applies. */
  readonly drainPrefix: string;
  /** The instance records' watch and the drain keys' watch. */
  readonly #watched: readonly [WatchedPrefix, WatchedPrefix];
  readonly #malformed: MalformedRecords;
  #closed = false;
  readonly #events = new Emitter<InstanceViewEvents>();
  readonly #subscribers = new Set<Subscriber>();
  /** The records as written, by id. */
  readonly #records = new Map<string, Instance>();
  /** Ids with a drain key. */
  readonly #drains = new Set<string>();
  /** The instances as published: the records with the drain rule applied. */
  readonly #cache = new Map<string, Instance>();
  #sorted: readonly Instance[] | undefined = [];
  #recordsRevision = 0;
  #drainsRevision = 0;
  #recordsListed = false;
  #drainsListed = false;
  #failure: MusterError | undefined;
  #resyncs = 0;

  constructor(store: Store, service: string, options: WatchInstancesOptions) {
    const keys = serviceKeys(options.root, service);
    this.service = keys.service;
    this.prefix = keys.instances;
    this.drainPrefix = keys.drains;
    this.#malformed = new MalformedRecords(options.logger);
    const watch = (prefix: string, onChange: (change: WatchedChange) => void): WatchedPrefix =>
      watchPrefix(store, prefix, {
        clock: options.clock ?? systemClock,
        backoff: { initial: RESYNC_BACKOFF_MS.initial, max: RESYNC_BACKOFF_MS.max },
        onChange,
        onRetry: (err) => {
          if (err !== undefined) this.#events.emit('error', err);
          this.#resyncs++;
        },
      });
    this.#watched = [
      watch(this.prefix, (change) => this.#takeRecords(change)),
      watch(this.drainPrefix, (change) => this.#takeDrains(change)),
    ];
    this.ready = Promise.all(this.#watched.map((w) => w.ready())).then(() => undefined);
    this.ready.catch(() => undefined);
    for (const w of this.#watched) void w.done.then(() => this.#failed(w.failure));
    onAbort(options.signal, () => this.close());
  }

  /** The store revision the view reflects (the later of its two watches). */
  get revision(): number {
    return Math.max(this.#recordsRevision, this.#drainsRevision);
  }

  /** How many times the view re-listed after a failed watch (each of its two watches counts). */
  get resyncs(): number {
    return this.#resyncs;
  }

  /** Every instance, sorted by id. */
  instances(): readonly Instance[] {
    this.#sorted ??= [...this.#cache.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    return this.#sorted;
  }

  get(id: string): Instance | undefined {
    return this.#cache.get(id);
  }

  get size(): number {
    return this.#cache.size;
  }

  on<K extends keyof InstanceViewEvents>(
    event: K,
    listener: (...args: InstanceViewEvents[K]) => void,
  ): () => void {
    return this.#events.on(event, listener);
  }
  once<K extends keyof InstanceViewEvents>(
    event: K,
    listener: (...args: InstanceViewEvents[K]) => void,
  ): () => void {
    return this.#events.once(event, listener);
  }
  off<K extends keyof InstanceViewEvents>(
    event: K,
    listener: (...args: InstanceViewEvents[K]) => void,
  ): void {
    this.#events.off(event, listener);
  }

  /** Stops watching; iterators finish. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const w of this.#watched) w.close();
    this.#wakeAll();
  }

  /** Closes and waits for the watch loops to end. */
  async [Symbol.asyncDispose](): Promise<void> {
    this.close();
    await Promise.all(this.#watched.map((w) => w.done));
  }

  /**
   * Yields the current snapshot first (`resync: true`), then every update. Throws the view's failure
   * (e.g. `MUSTER_CLOSED` when the store is closed); ends when the view is closed.
   */
  async *[Symbol.asyncIterator](): AsyncIterator<InstancesUpdate> {
    await this.ready.catch(() => undefined);
    const sub: Subscriber = { queue: [], wake: undefined };
    if (this.#recordsListed && this.#drainsListed) {
      sub.queue.push({ revision: this.revision, instances: this.instances(), changes: [], resync: true });
    }
    this.#subscribers.add(sub);
    try {
      for (;;) {
        const next = sub.queue.shift();
        if (next !== undefined) {
          yield next;
          continue;
        }
        if (this.#failure !== undefined) throw this.#failure;
        if (this.#closed) return;
        await new Promise<void>((resolve) => (sub.wake = resolve));
        sub.wake = undefined;
      }
    } finally {
      this.#subscribers.delete(sub);
    }
  }

  /** A watch ended: on a failure (e.g. the store closed) the view fails and stops its other watch. */
  #failed(err: unknown): void {
    if (err === undefined || this.#failure !== undefined) return;
    this.#failure =
      err instanceof MusterError
        ? err
        : new MusterError(
            'MUSTER_INTERNAL',
            err instanceof Error ? err.message : 'the instance view failed',
            {
              cause: err,
            },
          );
    for (const w of this.#watched) w.close();
    this.#wakeAll();
  }

  #wakeAll(): void {
    for (const s of this.#subscribers) s.wake?.();
  }

  #publish(update: InstancesUpdate): void {
    for (const s of this.#subscribers) {
      s.queue.push(update);
      s.wake?.();
    }
    this.#events.emit('update', update);
  }

  #takeRecords(change: WatchedChange): void {
    if (change.type === 'reset') {
      this.#records.clear();
      for (const kv of change.kvs) {
        const inst = this.#parse(kv);
        if (inst !== undefined && kv.key === this.prefix + inst.id) this.#records.set(inst.id, inst);
      }
      this.#recordsListed = true;
      this.#recordsRevision = change.revision;
      this.#resync();
    } else if (change.type === 'events') {
      const changes: InstanceChange[] = [];
      for (const e of change.events) {
        const id = e.kv.key.slice(this.prefix.length);
        if (e.type === 'delete') this.#malformed.clear(e.kv.key);
        const inst = e.type === 'put' ? this.#parse(e.kv) : undefined;
        // Deleted, or overwritten with a record nobody can read: either way it is gone.
        if (inst === undefined || inst.id !== id) this.#records.delete(id);
        else this.#records.set(id, inst);
        this.#settle(id, changes, false);
      }
      this.#recordsRevision = change.revision;
      this.#publishEvents(changes);
    } else this.#recordsRevision = Math.max(this.#recordsRevision, change.revision);
  }

  #takeDrains(change: WatchedChange): void {
    if (change.type === 'reset') {
      this.#drains.clear();
      for (const kv of change.kvs) this.#drains.add(kv.key.slice(this.drainPrefix.length));
      this.#drainsListed = true;
      this.#drainsRevision = change.revision;
      this.#resync();
    } else if (change.type === 'events') {
      const changes: InstanceChange[] = [];
      for (const e of change.events) {
        const id = e.kv.key.slice(this.drainPrefix.length);
        if (e.type === 'put') this.#drains.add(id);
        else this.#drains.delete(id);
        this.#settle(id, changes, false);
      }
      this.#drainsRevision = change.revision;
      this.#publishEvents(changes);
    } else this.#drainsRevision = Math.max(this.#drainsRevision, change.revision);
  }

  /** The instance in `kv`, or `undefined` for a malformed record (logged once with its key). */
  #parse(kv: KeyValue): Instance | undefined {
    const inst = parseInstance(this.service, kv);
    if (inst === undefined) this.#malformed.report(kv, 'instance record');
    else this.#malformed.clear(kv.key);
    return inst;
  }

  /**
   * After a listing (of either watch): once both are listed, brings every published instance in line
   * with the records and drain keys and publishes the difference, flagged `resync`.
   */
  #resync(): void {
    if (!this.#recordsListed || !this.#drainsListed) return;
    const changes: InstanceChange[] = [];
    for (const id of [...this.#cache.keys()]) if (!this.#records.has(id)) this.#settle(id, changes, true);
    for (const id of this.#records.keys()) this.#settle(id, changes, true);
    this.#sorted = undefined;
    this.#publish({ revision: this.revision, instances: this.instances(), changes, resync: true });
  }

  #publishEvents(changes: readonly InstanceChange[]): void {
    if (changes.length === 0 || !this.#recordsListed || !this.#drainsListed) return;
    this.#sorted = undefined;
    this.#publish({ revision: this.revision, instances: this.instances(), changes, resync: false });
  }

  /**
   * Brings the published instance `id` in line with its record and drain key, and records what
   * changed. A record re-created under another registration is `left` + `joined` for an event, and
   * `changed` for a listing (which cannot tell how often it happened). Before both watches have
   * listed, nothing is published: the first snapshot already carries the drains.
   */
  #settle(id: string, changes: InstanceChange[], resync: boolean): void {
    if (!this.#recordsListed || !this.#drainsListed) return;
    const old = this.#cache.get(id);
    const record = this.#records.get(id);
    const inst = record === undefined ? undefined : withDrain(record, this.#drains.has(id));
    if (inst === undefined) {
      if (old === undefined) return;
      this.#cache.delete(id);
      changes.push({ type: 'left', instance: old });
      return;
    }
    if (old === undefined) changes.push({ type: 'joined', instance: inst });
    else if (
      old.modRevision === inst.modRevision &&
      old.createRevision === inst.createRevision &&
      old.state === inst.state
    ) {
      return;
    } else if (!resync && old.createRevision !== inst.createRevision) {
      changes.push({ type: 'left', instance: old }, { type: 'joined', instance: inst });
    } else changes.push({ type: 'changed', instance: inst, previous: old });
    this.#cache.set(id, inst);
  }
}
