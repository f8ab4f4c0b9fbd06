/**
 * The routing table: key → destination, read from the watched {@link RoutingSource} in memory. A route
 * pin wins; otherwise the key hashes (placement's `partitionForKey`) to a partition, whose owner's
 * published endpoint, else the owner instance's address, is the destination. Nothing here waits.
 */
import { partitionForKey } from '../placement/index.js';
import type { RoutingSource } from './routing-source.js';

/** Why a key routes where it does, or why it cannot be routed now. */
export type Resolution =
  | {
      readonly ok: true;
      /** Hold-queue identity: `partition:<p>` or `instance:<id>` (route pins). */
      readonly destination: string;
      /** `http://host:port`. */
      readonly origin: string;
      readonly via: 'route' | 'partition';
      readonly instance: string;
      readonly partition: string | undefined;
      readonly token: number | undefined;
      /** `owner-endpoint`: the owner record's address; `instance-address`: the instance record's. */
      readonly addressFrom: 'owner-endpoint' | 'instance-address';
    }
  | {
      readonly ok: false;
      readonly destination: string;
      readonly via: 'route' | 'partition';
      readonly reason: 'no-spec' | 'no-owner' | 'moving' | 'no-address';
      readonly instance: string | undefined;
      readonly partition: string | undefined;
      readonly token: number | undefined;
    };

/** 10,000 keys' resolutions kept per source revision (then the cache starts again): a few MB at most. */
const MAX_CACHED_KEYS = 10_000;

export class RoutingTable {
  readonly #source: RoutingSource;
  readonly #partitions: number | undefined;
  readonly #origins = new Map<string, string>();
  /**
   * Resolutions by key, valid for one revision of the source: every change to the watched state
   * comes with a new store revision, so a key's answer is computed once per revision instead of once
   * per request (a pin lookup, a hash, a partition's owner and a new object each time).
   */
  readonly #cache = new Map<string, Resolution>();
  #cacheRevision = -1;

  /** `partitions`: the configured hash partition count; default: the service spec's partition count. */
  constructor(source: RoutingSource, partitions?: number) {
    this.#source = source;
    this.#partitions = partitions;
  }

  get source(): RoutingSource {
    return this.#source;
  }

  /** The partition `key` hashes to, or `undefined` while the count is unknown. */
  partitionOf(key: string): string | undefined {
    const ids = this.#source.partitions;
    const count = this.#partitions ?? ids?.length;
    if (count === undefined || count === 0) return undefined;
    const index = partitionForKey(key, count);
    return ids?.[index] ?? String(index);
  }

  /** Where `key` goes now (computed once per key and source revision; the result is shared, read-only). */
  resolve(key: string): Resolution {
    const revision = this.#source.revision;
    if (revision !== this.#cacheRevision) {
      this.#cache.clear();
      this.#cacheRevision = revision;
    }
    let r = this.#cache.get(key);
    if (r === undefined) {
      r = this.#resolve(key);
      if (this.#cache.size >= MAX_CACHED_KEYS) this.#cache.clear();
      this.#cache.set(key, r);
    }
    return r;
  }

  #resolve(key: string): Resolution {
    const s = this.#source;
    const pin = s.routes.get(key);
    if (pin !== undefined) {
      const address = s.instances.get(pin.instance)?.address ?? undefined;
      const destination = `instance:${pin.instance}`;
      if (address === undefined) {
        return {
          ok: false,
          destination,
          via: 'route',
          reason: 'no-address',
          instance: pin.instance,
          partition: undefined,
          token: undefined,
        };
      }
      return {
        ok: true,
        destination,
        origin: this.#origin(address),
        via: 'route',
        instance: pin.instance,
        partition: undefined,
        token: undefined,
        addressFrom: 'instance-address',
      };
    }
    const partition = this.partitionOf(key);
    if (partition === undefined) {
      return {
        ok: false,
        destination: 'spec',
        via: 'partition',
        reason: 'no-spec',
        instance: undefined,
        partition: undefined,
        token: undefined,
      };
    }
    const destination = `partition:${partition}`;
    // the partitions view's one rule: owner, token, published address else the instance's, moving
    const owner = s.destination(partition);
    if (owner === undefined) {
      return {
        ok: false,
        destination,
        via: 'partition',
        reason: 'no-owner',
        instance: undefined,
        partition,
        token: undefined,
      };
    }
    if (owner.moving) {
      return {
        ok: false,
        destination,
        via: 'partition',
        reason: 'moving',
        instance: owner.instance,
        partition,
        token: owner.token,
      };
    }
    const address = owner.address;
    if (address === null) {
      return {
        ok: false,
        destination,
        via: 'partition',
        reason: 'no-address',
        instance: owner.instance,
        partition,
        token: owner.token,
      };
    }
    return {
      ok: true,
      destination,
      origin: this.#origin(address),
      via: 'partition',
      instance: owner.instance,
      partition,
      token: owner.token,
      addressFrom: s.owners.get(partition)?.address === undefined ? 'instance-address' : 'owner-endpoint',
    };
  }

  /** `host:port` → `http://host:port` (cached; addresses are few). */
  #origin(address: string): string {
    let o = this.#origins.get(address);
    if (o === undefined) {
      o = /^[a-z][a-z0-9+.-]*:\/\//i.test(address) ? new URL(address).origin : `http://${address}`;
      if (this.#origins.size > 10_000) this.#origins.clear();
      this.#origins.set(address, o);
    }
    return o;
  }
}
