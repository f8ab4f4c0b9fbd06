/**
 * What the proxy reads from the store: one service's owners (with their published endpoints),
 * instances, route pins and spec, as a watched in-memory copy. The proxy depends on this interface
 * only; `openRoutingSource` (in `store-routing-source.ts`) is the one file that knows where it comes
 * from, so switching to Contract C's `openServiceView` is a one-file change.
 */
import type { Store } from '../store/index.js';
import type { Clock } from '../clock.js';

/** An owner record as the proxy needs it. */
export interface RouteOwner {
  readonly instance: string;
  /** The fencing token (the owner key's createRevision). */
  readonly token: number;
  /** The partition's own endpoint, published by its owner (Contract C); else the instance's address is used. */
  readonly address?: string | undefined;
  /** The owner is handing the partition over: hold its requests (transparent moves). */
  readonly moving?: boolean | undefined;
}

export interface RouteInstance {
  readonly address: string | null | undefined;
}

/** The watched routing state of one service. */
export interface RoutingSource {
  /** The store revision the copy reflects. */
  readonly revision: number;
  /** Monotonic ms (performance.now) when the copy last changed (or was first loaded). */
  readonly updatedAt: number;
  /** The service's partition ids in spec order, or `undefined` while the service has no spec. */
  readonly partitions: readonly string[] | undefined;
  readonly owners: ReadonlyMap<string, RouteOwner>;
  readonly instances: ReadonlyMap<string, RouteInstance>;
  /**
   * Where a partition's requests go: owner, token, the owner's published address else the owner
   * instance's (`null`: neither), moving. `undefined` when the partition has no (readable) owner.
   */
  destination(partition: string):
    | {
        readonly instance: string;
        readonly token: number;
        readonly address: string | null;
        readonly moving: boolean;
      }
    | undefined;
  /** Route pins: `services/<s>/routes/<key>` → `{ instance }`. */
  readonly routes: ReadonlyMap<string, { readonly instance: string }>;
  /** Resolves after the first full read. */
  ready(options?: { signal?: AbortSignal }): Promise<void>;
  /** Calls `listener` after changes (coalesced, on a later turn); returns an unsubscribe function. */
  subscribe(listener: () => void): () => void;
  /** Stops watching; idempotent. */
  close(): void;
}

export interface RoutingSourceOptions {
  readonly root?: string | undefined;
  readonly clock?: Clock;
}

/** Opens the routing source of `service` (see `store-routing-source.ts`). */
export type OpenRoutingSource = (
  store: Store,
  service: string,
  options?: RoutingSourceOptions,
) => RoutingSource;
