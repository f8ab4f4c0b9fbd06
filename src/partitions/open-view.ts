/**
 * `openServiceView`: the public entry to a service's watched partitions view (spec, instances,
 * owners with their addresses, pins and routes) for other capabilities — the proxy's routing table,
 * the agent's and the bus's view of who owns what.
 */
import type { Clock } from '../clock.js';
import { abortedError, MusterError } from '../errors.js';
import type { WarnLogger } from '../membership/internal.js';
import type { Store } from '../store/index.js';
import { ownershipKeys } from './spec.js';
import type { Owner, RouteRecord, ServiceSpec } from './types.js';
import {
  acquireView,
  releaseView,
  type ServiceView,
  type ViewAssignment,
  type ViewInstance,
} from './view.js';
import { abortable, onAbort } from '../util/abort.js';

export interface OpenServiceViewOptions {
  /** Key root. Default: `/muster/`. */
  root?: string;
  /** For the re-list back-off and the assignment throttle. Default: the system clock. */
  clock?: Clock;
  /** Aborting closes the view (as {@link ServiceViewHandle.close}). */
  signal?: AbortSignal;
  /** Where malformed records are reported (once per key and write). Default: a JSON line on stderr. */
  logger?: WarnLogger;
}

/** Where a partition's requests go, as {@link ServiceViewHandle.destination} reads it. */
export interface PartitionDestination {
  readonly partition: string;
  readonly instance: string;
  readonly token: number;
  /** The owner record's `address`, else the owner instance's; `null` when neither is known. */
  readonly address: string | null;
  readonly moving: boolean;
}

/**
 * One holder's reference to the shared view of a service. Every holder in the process that uses the
 * same store object and service shares one watch; `close()` drops this holder's reference (and its
 * subscriptions), and the last one stops the watch. The maps are live: read them, do not modify them.
 */
export class ServiceViewHandle {
  readonly service: string;
  readonly #store: Store;
  readonly #view: ServiceView;
  readonly #unsubscribes = new Set<() => void>();
  #closed = false;
  readonly #offAbort: () => void;

  /** @internal Use {@link openServiceView}. */
  constructor(store: Store, view: ServiceView, signal: AbortSignal | undefined) {
    this.service = view.keys.service;
    this.#store = store;
    this.#view = view;
    view.ready().catch(() => undefined);
    this.#offAbort = onAbort(signal, () => this.close());
  }

  /**
   * Resolves once the view holds a full listing (at once after the first holder waited for it).
   * Rejects with the store's error when the listing fails (a later call tries again), with
   * `MUSTER_CLOSED` after {@link close}, and `MUSTER_ABORTED` when `signal` fires first.
   */
  async ready(options: { signal?: AbortSignal } = {}): Promise<void> {
    const signal = options.signal;
    if (signal?.aborted) throw abortedError(signal);
    if (this.#closed) throw new MusterError('MUSTER_CLOSED', 'the service view was closed');
    // The view caches its first listing; after a failed one it tries again.
    const ready = this.#view.ready();
    if (signal === undefined) return ready;
    await abortable(ready, signal);
  }

  /** The store revision the view reflects (0 before the first listing). */
  get revision(): number {
    return this.#view.revision;
  }
  /** The service spec, `undefined` when there is none (or it is malformed). */
  get spec(): ServiceSpec | undefined {
    return this.#view.spec;
  }
  /** Instances by id, as membership parses them (with `address`; malformed records skipped). */
  get instances(): ReadonlyMap<string, ViewInstance> {
    return this.#view.instances;
  }
  /** Owners by partition: `instance`, `token`, `since`, and the published `address` and `moving`. */
  get owners(): ReadonlyMap<string, Owner> {
    return this.#view.owners;
  }
  /** Pinned partitions: partition → instance id. */
  get pins(): ReadonlyMap<string, string> {
    return this.#view.pins;
  }
  /** Pinned routing keys: key → `{ instance }`. */
  get routes(): ReadonlyMap<string, RouteRecord> {
    return this.#view.routes;
  }
  /**
   * Where a partition's requests go now (brief §8): its owner, the owner's fencing token, the
   * address the owner published (else the owner instance's address; `null` when neither is known)
   * and whether it is moving. `undefined` when the partition has no owner, or an owner record that
   * cannot be read (nothing routes there).
   */
  destination(partition: string): PartitionDestination | undefined {
    const owner = this.#view.owners.get(partition);
    if (owner === undefined || owner.instance === '') return undefined;
    return {
      partition,
      instance: owner.instance,
      token: owner.token,
      address: owner.address ?? this.#view.instances.get(owner.instance)?.address ?? null,
      moving: owner.moving === true,
    };
  }

  /** The assignment placement computes from the current snapshot. */
  assignment(): ViewAssignment {
    return this.#view.assignment();
  }

  /**
   * Calls `listener` after changes (coalesced, on a later turn). Returns an unsubscribe function;
   * {@link close} removes every listener of this holder.
   */
  subscribe(listener: () => void): () => void {
    if (this.#closed) return () => undefined;
    const off = this.#view.subscribe(() => {
      try {
        listener();
      } catch {
        // A throwing listener must not stop the others.
      }
    });
    const unsubscribe = (): void => {
      off();
      this.#unsubscribes.delete(unsubscribe);
    };
    this.#unsubscribes.add(unsubscribe);
    return unsubscribe;
  }

  /** Drops this holder's reference and listeners; idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#offAbort();
    for (const off of [...this.#unsubscribes]) off();
    releaseView(this.#store, this.#view);
  }

  [Symbol.dispose](): void {
    this.close();
  }

  [Symbol.asyncDispose](): Promise<void> {
    this.close();
    return Promise.resolve();
  }
}

/**
 * Opens `service`'s watched partitions view, shared with every other holder in the process that
 * uses the same `store` object (one watch). Returns at once and starts listing; `await
 * view.ready()` before the first read. The view keeps itself current (re-listing after a compaction
 * or a broken watch) until {@link ServiceViewHandle.close} or `signal`.
 *
 * Throws `MUSTER_INVALID_ARGUMENT` for a bad service name or root, `MUSTER_ABORTED` when `signal`
 * has already fired.
 */
export function openServiceView(
  store: Store,
  service: string,
  options: OpenServiceViewOptions = {},
): ServiceViewHandle {
  const keys = ownershipKeys(options.root, service);
  if (options.signal?.aborted) throw abortedError(options.signal);
  const view = acquireView(store, keys, options.clock, options.logger);
  return new ServiceViewHandle(store, view, options.signal);
}
