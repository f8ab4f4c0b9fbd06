/**
 * The memory engine's leases: their TTLs, the keys attached to each, and one timer on the injected
 * clock for the earliest expiry.
 *
 * The table only tells the engine when a lease may be due; ending a lease (deleting its keys at a new
 * revision) is the engine's work.
 */
import type { Clock, TimerHandle } from '../../clock.js';
import { MusterError } from '../../errors.js';
import { checkLeaseId, compareKeys } from '../keys.js';
import { type LeaseId, type LeaseInfo, NO_LEASE } from '../types.js';

interface LeaseState {
  readonly id: LeaseId;
  readonly ttlSeconds: number;
  expiresAt: number; // monotonic ms
  readonly keys: Set<string>;
}

/** The live leases and their expiry timer. */
export class LeaseTable {
  readonly #clock: Clock;
  readonly #onDue: () => void;
  readonly #leases = new Map<LeaseId, LeaseState>();
  #nextId = 1n;
  #timer: TimerHandle | undefined;
  #timerAt = Infinity;
  #stopped = false;

  /** `onDue` runs when the earliest expiry has passed; it calls {@link endExpired} and {@link arm}. */
  constructor(clock: Clock, onDue: () => void) {
    this.#clock = clock;
    this.#onDue = onDue;
  }

  /** The number the next granted lease id takes (a bigint: ids are int64, like etcd's). */
  get nextId(): bigint {
    return this.#nextId;
  }

  set nextId(n: bigint) {
    this.#nextId = n;
  }

  /** Grants a new lease and returns its id. */
  grant(ttlSeconds: number): LeaseId {
    const id = String(this.#nextId++);
    this.add(id, ttlSeconds);
    return id;
  }

  /** Adds lease `id`, expiring `ttlSeconds` from now (replacing one of the same id). */
  add(id: LeaseId, ttlSeconds: number): void {
    const expiresAt = this.#clock.monotonic() + ttlSeconds * 1000;
    this.#leases.set(id, { id, ttlSeconds, expiresAt, keys: new Set() });
    this.arm(expiresAt);
  }

  /** Adds lease `id` with a TTL of 1 s if it is missing (a key names a lease the log never granted). */
  ensure(id: LeaseId): void {
    if (!this.#leases.has(id)) this.add(id, 1);
  }

  has(id: LeaseId): boolean {
    return this.#leases.has(id);
  }

  /** Throws `MUSTER_LEASE_NOT_FOUND` unless `lease` is {@link NO_LEASE} or a live lease. */
  checkForPut(lease: LeaseId, key: string): void {
    if (lease === NO_LEASE) return;
    checkLeaseId(lease);
    if (!this.#leases.has(lease)) throw leaseNotFound(lease, key);
  }

  attach(lease: LeaseId, key: string): void {
    this.#leases.get(lease)?.keys.add(key);
  }

  detach(lease: LeaseId, key: string): void {
    this.#leases.get(lease)?.keys.delete(key);
  }

  /** Restarts the TTL of lease `id`; returns the TTL, or `undefined` if there is no such lease. */
  renew(id: LeaseId): number | undefined {
    const lease = this.#leases.get(id);
    if (lease === undefined) return undefined;
    lease.expiresAt = this.#clock.monotonic() + lease.ttlSeconds * 1000;
    return lease.ttlSeconds;
  }

  /** What is left of lease `id`, or `undefined` if there is no such lease. */
  timeToLive(id: LeaseId): LeaseInfo | undefined {
    const lease = this.#leases.get(id);
    if (lease === undefined) return undefined;
    const left = Math.max(0, Math.floor((lease.expiresAt - this.#clock.monotonic()) / 1000));
    return {
      id,
      ttlSeconds: left,
      grantedTtlSeconds: lease.ttlSeconds,
      keys: [...lease.keys].sort(compareKeys),
    };
  }

  /** Removes lease `id` and returns the keys attached to it, or `undefined` if there is no such lease. */
  take(id: LeaseId): ReadonlySet<string> | undefined {
    const lease = this.#leases.get(id);
    if (lease === undefined) return undefined;
    this.#leases.delete(id);
    return lease.keys;
  }

  ids(): LeaseId[] {
    return [...this.#leases.keys()];
  }

  /** Every lease with its granted TTL (for snapshots). */
  grants(): { id: LeaseId; ttlSeconds: number }[] {
    return [...this.#leases.values()].map((l) => ({ id: l.id, ttlSeconds: l.ttlSeconds }));
  }

  /**
   * Calls `end` for each lease whose expiry has passed (`end` may remove leases); returns the
   * earliest expiry of the others, or `Infinity`.
   */
  endExpired(end: (id: LeaseId) => void): number {
    const now = this.#clock.monotonic();
    let next = Infinity;
    for (const lease of [...this.#leases.values()]) {
      if (lease.expiresAt <= now) end(lease.id);
      else next = Math.min(next, lease.expiresAt);
    }
    return next;
  }

  /** Makes sure the timer fires no later than monotonic time `at`. */
  arm(at: number): void {
    if (this.#stopped || at >= this.#timerAt) return;
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    this.#timerAt = at;
    this.#timer = this.#clock.setTimeout(() => this.#fire(), Math.max(0, at - this.#clock.monotonic()));
  }

  /** Cancels the timer for good. */
  stop(): void {
    this.#stopped = true;
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #fire(): void {
    this.#timer = undefined;
    this.#timerAt = Infinity;
    if (this.#stopped) return;
    this.#onDue();
  }
}

/** `MUSTER_LEASE_NOT_FOUND` for lease `id` (and the key a write meant to attach to it). */
export function leaseNotFound(id: LeaseId, key?: string): MusterError {
  return new MusterError(
    'MUSTER_LEASE_NOT_FOUND',
    `lease ${id} does not exist (expired, revoked or never granted)`,
    {
      details: { lease: id, ...(key === undefined ? {} : { key }) },
    },
  );
}
