/**
 * `watchInstances(store, service)`: a cached, watched view of a service's instances — a decoder
 * over the store's watched view (`watchPrefix`).
 *
 * The watched view lists the instances, then watches from the listed revision + 1. When the watch
 * fails (disconnect, compaction, store restart) it lists again, and this view reports the difference
 * against its cache as ordinary joined/left/changed changes, flagged `resync`, so consumers never
 * miss a change of state even when they miss the events in between.
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
import { type Instance, parseInstance } from './types.js';
import { onAbort } from '../util/abort.js';

/** One change of the view. */
export type InstanceChange =
  | { readonly type: 'joined'; readonly instance: Instance }
  | { readonly type: 'left'; readonly instance: Instance }
  | { readonly type: 'changed'; readonly instance: Instance; readonly previous: Instance };

/** What the view yields: the whole current set plus what changed since the previous update. */
export interface InstancesUpdate {
  /** Store revision the view reflects. */
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
  readonly #watched: WatchedPrefix;
  readonly #malformed: MalformedRecords;
  #closed = false;
  readonly #events = new Emitter<InstanceViewEvents>();
  readonly #subscribers = new Set<Subscriber>();
  #cache = new Map<string, Instance>();
  #sorted: readonly Instance[] | undefined = [];
  #revision = 0;
  #listed = false;
  #failure: MusterError | undefined;
  #resyncs = 0;

  constructor(store: Store, service: string, options: WatchInstancesOptions) {
    const keys = serviceKeys(options.root, service);
    this.service = keys.service;
    this.prefix = keys.instances;
    this.#malformed = new MalformedRecords(options.logger);
    this.#watched = watchPrefix(store, this.prefix, {
      clock: options.clock ?? systemClock,
      backoff: { initial: RESYNC_BACKOFF_MS.initial, max: RESYNC_BACKOFF_MS.max },
      onChange: (change) => this.#take(change),
      onRetry: (err) => {
        if (err !== undefined) this.#events.emit('error', err);
        this.#resyncs++;
      },
    });
    this.ready = this.#watched.ready();
    this.ready.catch(() => undefined);
    void this.#watched.done.then(() => {
      const err = this.#watched.failure;
      if (err === undefined) return;
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
      this.#wakeAll();
    });
    onAbort(options.signal, () => this.close());
  }

  /** The store revision the view reflects. */
  get revision(): number {
    return this.#revision;
  }

  /** How many times the view re-listed after a failed watch. */
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
    this.#watched.close();
    this.#wakeAll();
  }

  /** Closes and waits for the watch loop to end. */
  async [Symbol.asyncDispose](): Promise<void> {
    this.close();
    await this.#watched.done;
  }

  /**
   * Yields the current snapshot first (`resync: true`), then every update. Throws the view's failure
   * (e.g. `MUSTER_CLOSED` when the store is closed); ends when the view is closed.
   */
  async *[Symbol.asyncIterator](): AsyncIterator<InstancesUpdate> {
    await this.ready.catch(() => undefined);
    const sub: Subscriber = { queue: [], wake: undefined };
    if (this.#listed) {
      sub.queue.push({ revision: this.#revision, instances: this.instances(), changes: [], resync: true });
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

  #take(change: WatchedChange): void {
    if (change.type === 'reset') this.#applyListing(change.kvs, change.revision);
    else if (change.type === 'events') this.#applyEvents(change.events, change.revision);
    else this.#revision = Math.max(this.#revision, change.revision);
  }

  /** The instance in `kv`, or `undefined` for a malformed record (logged once with its key). */
  #parse(kv: KeyValue): Instance | undefined {
    const inst = parseInstance(this.service, kv);
    if (inst === undefined) this.#malformed.report(kv, 'instance record');
    else this.#malformed.clear(kv.key);
    return inst;
  }

  #applyListing(kvs: readonly KeyValue[], revision: number): void {
    const next = new Map<string, Instance>();
    for (const kv of kvs) {
      const inst = this.#parse(kv);
      if (inst !== undefined && kv.key === this.prefix + inst.id) next.set(inst.id, inst);
    }
    this.#listed = true;
    const changes: InstanceChange[] = [];
    for (const [id, old] of this.#cache) if (!next.has(id)) changes.push({ type: 'left', instance: old });
    for (const [id, inst] of next) {
      const old = this.#cache.get(id);
      if (old === undefined) changes.push({ type: 'joined', instance: inst });
      else if (old.modRevision !== inst.modRevision || old.createRevision !== inst.createRevision) {
        changes.push({ type: 'changed', instance: inst, previous: old });
      }
    }
    this.#cache = next;
    this.#sorted = undefined;
    this.#revision = revision;
    this.#publish({ revision, instances: this.instances(), changes, resync: true });
  }

  #applyEvents(events: readonly { type: 'put' | 'delete'; kv: KeyValue }[], revision: number): void {
    const changes: InstanceChange[] = [];
    for (const e of events) {
      const id = e.kv.key.slice(this.prefix.length);
      const old = this.#cache.get(id);
      if (e.type === 'delete') this.#malformed.clear(e.kv.key);
      const inst = e.type === 'put' ? this.#parse(e.kv) : undefined;
      if (inst === undefined || inst.id !== id) {
        // Deleted, or overwritten with a record nobody can read: either way it is gone.
        if (old !== undefined) {
          this.#cache.delete(id);
          changes.push({ type: 'left', instance: old });
        }
        continue;
      }
      this.#cache.set(id, inst);
      if (old === undefined) changes.push({ type: 'joined', instance: inst });
      else if (old.createRevision !== inst.createRevision) {
        changes.push({ type: 'left', instance: old }, { type: 'joined', instance: inst });
      } else changes.push({ type: 'changed', instance: inst, previous: old });
    }
    this.#revision = revision;
    if (changes.length === 0) return;
    this.#sorted = undefined;
    this.#publish({ revision, instances: this.instances(), changes, resync: false });
  }
}
