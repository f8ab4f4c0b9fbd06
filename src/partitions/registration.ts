/**
 * What ownership needs from sessions and membership. Ownership depends on two small ports — a
 * session (a lease with a local validity deadline) and a member (the instance record under that
 * lease, whose `state` can be changed) — which membership's `Session` and `Member` satisfy.
 */
import type { Clock } from '../clock.js';
import { type CheckOptions, join } from '../membership/index.js';
import type { LeaseId, Store } from '../store/index.js';

/** The session of an owner: its lease, a signal that fires when it is lost, and its validity deadline. */
export interface OwnershipSession {
  readonly leaseId: LeaseId;
  /** Aborts when the session is lost (deadline passed, lease gone) or closed. */
  readonly lost: AbortSignal;
  /** Monotonic ms (of the session's clock) before which the store cannot expire the lease. */
  deadline(): number;
  /** True while not lost and before the deadline. */
  isValid(): boolean;
}

/** An instance's state as published in its record. */
export type MemberState = 'active' | 'draining' | 'leaving';

/** A registered instance: its record lives under the session's lease. */
export interface OwnershipMember {
  readonly id: string;
  readonly session: OwnershipSession;
  /** Publishes a new state in the instance record. */
  setState(state: MemberState): Promise<unknown>;
  /** Replaces the notes of the instance record (`{}` removes them). */
  update(changes: { notes?: Readonly<Record<string, string>> }): Promise<unknown>;
  /** Deletes the record and closes the session it opened; never rejects. */
  leave(): Promise<void>;
}

export { defaultInstanceId } from '../membership/index.js';

/**
 * Opens a session and registers the instance in the service (membership's `join`). Throws
 * `MUSTER_DUPLICATE_INSTANCE` when a live instance has the id, and the store's errors.
 */
export function registerInstance(
  store: Store,
  options: {
    service: string;
    root: string | undefined;
    id: string;
    ttlMs: number;
    clock: Clock;
    weight: number;
    address: string | undefined;
    checks?: readonly CheckOptions[] | undefined;
    tags?: readonly string[] | undefined;
    notes?: Readonly<Record<string, string>> | undefined;
    /** The record's initial state (default `active`; a drained instance rejoins `draining`). */
    state?: 'active' | 'draining';
  },
): Promise<OwnershipMember> {
  return join(store, {
    service: options.service,
    id: options.id,
    ttl: options.ttlMs,
    clock: options.clock,
    weight: options.weight,
    ...(options.root === undefined ? {} : { root: options.root }),
    ...(options.address === undefined ? {} : { address: options.address }),
    ...(options.checks === undefined ? {} : { checks: options.checks }),
    ...(options.tags === undefined ? {} : { tags: options.tags }),
    ...(options.notes === undefined ? {} : { notes: options.notes }),
    ...(options.state === undefined ? {} : { state: options.state }),
  });
}
