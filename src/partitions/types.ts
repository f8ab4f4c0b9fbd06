/**
 * Types, defaults and store records of partition ownership (brief §5, docs/partitions.md).
 */
import type { Clock } from '../clock.js';
import type { CheckOptions } from '../membership/index.js';
import { MAX_VALUE_BYTES, type LeaseId, type Store } from '../store/index.js';
import type { Duration } from '../util/duration.js';

/** 3 s: a crashed owner's partitions move in about 3 s (Kafka waits 45 s, Consul 15 s of lock-delay). */
export const DEFAULT_PARTITION_TTL_MS = 3000;
/** 10 s: long enough for a consumer to commit its offsets, short enough that a stuck handler shows. */
export const DEFAULT_STOP_TIMEOUT_MS = 10_000;
/**
 * 8 hand-offs in flight per instance: draining a large instance proceeds a few partitions at a time,
 * so the instances that take them over are not shock-loaded, yet a hand-off (milliseconds) keeps the
 * whole drain short.
 */
export const DEFAULT_MAX_CONCURRENT_MOVES = 8;
/** 64 acquisitions in flight: bounds the write burst after a crash without slowing failover. */
export const DEFAULT_MAX_CONCURRENT_ACQUIRES = 64;
/** 500 ms before retrying a failed store write: short against the TTL, long against a leader election. */
export const DEFAULT_RETRY_DELAY_MS = 500;

/** What an instance does with its partitions when its health is `failing`. */
export type UnhealthyPolicy = 'drain' | 'keep';

/** Service-wide settings, stored in the spec so that every instance uses the same. */
export interface PartitionSettings {
  /** Placement load bound ε (see docs/placement.md). Default: placement's default (0.1). */
  readonly epsilon?: number;
  /** Placement hash seed. Default: placement's default (0). */
  readonly seed?: number;
  /** `drain`: a failing instance gets no partitions (placement treats it as draining). Default: `drain`. */
  readonly unhealthy?: UnhealthyPolicy;
}

/** The JSON value of `services/<service>/spec`. */
export interface ServiceSpec {
  /** Partition ids, or a count N meaning `'0'` … `'N-1'`. */
  readonly partitions: readonly string[] | number;
  readonly settings?: PartitionSettings;
}

/** The JSON value of `services/<service>/owners/<partition>`. The fencing token is the key's createRevision. */
export interface OwnerRecord {
  readonly instance: string;
  /** ISO-8601 time the owner acquired the partition. */
  readonly since: string;
  /**
   * Where the partition's own work listens (`host:port` or a URL), published by the owner with
   * {@link AcquireContext.publish} once it is ready; the proxy routes the partition's keys there.
   * Absent: use the owner instance's address.
   */
  readonly address?: string;
  /** True while the owner is handing the partition over (the proxy holds its requests). */
  readonly moving?: boolean;
}

/** The fields an owner may publish in its owner record (see {@link AcquireContext.publish}). */
export interface OwnerFields {
  /** `host:port` or a URL, validated as an instance address is. */
  readonly address?: string;
  readonly moving?: boolean;
}

/** The JSON value of `services/<service>/pins/<partition>`. */
export interface PinRecord {
  readonly instance: string;
}

/**
 * The JSON value of `services/<service>/routes/<key>`: a routing key pinned to one instance (the
 * proxy sends that key's requests there instead of to its partition's owner).
 */
export interface RouteRecord {
  readonly instance: string;
}

/** An owner key as read from the store. */
export interface Owner extends OwnerRecord {
  readonly partition: string;
  /** The fencing token: the owner key's createRevision, strictly increasing across owners. */
  readonly token: number;
  readonly lease: LeaseId;
}

/** What `onAcquire` receives. */
export interface AcquireContext {
  /** The fencing token: pass it to every downstream write and let the downstream reject older tokens. */
  readonly token: number;
  /** Aborts when the work must stop: release, lost session, lost key, leave or close. */
  readonly signal: AbortSignal;
  /**
   * True while this ownership may still act: not aborted and the session's validity deadline not
   * passed. Check it synchronously right before each side effect: a timer can fire late, and a
   * process frozen by SIGSTOP resumes with its old timers still pending.
   */
  valid(): boolean;
  /** Throws `MUSTER_NOT_OWNER` unless {@link AcquireContext.valid}. */
  assertOwner(): void;
  /** The session's validity deadline, in the handle clock's monotonic milliseconds. */
  deadline(): number;
  /**
   * Rewrites this partition's owner record with `fields` merged over what was published before
   * (e.g. `{ address }` once the work listens, `{ moving: true }` before a hand-off), under the same
   * lease, in a transaction fenced on the key's createRevision being this ownership's token: it can
   * never write over a successor's record. Calls are applied in order.
   *
   * Throws `MUSTER_INVALID_ARGUMENT` for a bad address or a non-boolean `moving` (nothing written),
   * `MUSTER_NOT_OWNER` when the ownership has ended or the owner key is no longer this one, and the
   * store's errors (`MUSTER_UNAVAILABLE`, …).
   */
  publish(fields: OwnerFields): Promise<void>;
  /**
   * The state the previous owner handed over when it released the partition (what its `onRelease`
   * or its work returned), or `undefined` when there was none: a first acquisition, a crashed or
   * expired previous owner, or one that returned nothing. Fenced by the tokens: see
   * docs/partitions.md, "Hand-off of state".
   */
  readonly state: Uint8Array | undefined;
}

/**
 * What a releasing owner may hand to the next owner: bytes or a string (UTF-8), at most the store's
 * value limit ({@link MAX_HANDOFF_BYTES}). Anything else (e.g. `undefined`) hands over nothing.
 */
export type HandoffState = Uint8Array | string;

/** The largest state a release hands over: the store's value limit (1 MiB). Larger states are dropped, with an error event. */
export const MAX_HANDOFF_BYTES = MAX_VALUE_BYTES;

/**
 * The work for one partition. Either return a promise that settles when the work has stopped after
 * `signal` aborted, or start the work and return, and stop it in `onRelease`. A promise that rejects
 * is reported on the `error` event; the partition stays owned. A promise that resolves (after the
 * abort of a graceful release) with a {@link HandoffState} hands that state to the next owner.
 */
export type AcquireHandler = (partition: string, context: AcquireContext) => unknown;
/**
 * Called after `signal` aborted; the partition is released when it (and the acquire promise) settle.
 * On a graceful release (a move, a drain, `close()`), a {@link HandoffState} it returns (or resolves
 * with) is handed to the next owner's `onAcquire` as `context.state`; it wins over the work's.
 */
export type ReleaseHandler = (partition: string) => unknown;

/** The life of a {@link PartitionedHandle}. */
export type PartitionedState = 'active' | 'draining' | 'leaving' | 'lost' | 'closed';

/** Why an ownership ended without a release (the `lost` event): the session or the owner key is gone. */
export type StopCause = 'session-lost' | 'key-lost';

/** A pino-compatible logger (only what partitions uses). */
export interface PartitionsLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export interface JoinPartitionedOptions {
  /** The service (1–63 letters, digits, `.`, `_`, `-`). Required. */
  service: string;
  /**
   * This instance's partition set. When given and different from the stored spec, it is written
   * (compare-and-set) and a warning is logged: the seed's "Update Partitions". When absent, the stored
   * spec is used (and the handle waits for one).
   */
  partitions?: readonly string[] | number;
  /** Service settings written with `partitions`. Default: none (placement defaults, `unhealthy: drain`). */
  settings?: PartitionSettings;
  /** Starts work on an acquired partition. Required. */
  onAcquire: AcquireHandler;
  /** Stops work on a partition being released. Optional. */
  onRelease?: ReleaseHandler;
  /** Instance id. Default: `<host>-<pid>-<random>`. */
  id?: string;
  /** Relative capacity. Default: 1. */
  weight?: number;
  /** Where the instance listens, published in its record. Default: none. */
  address?: string;
  /** Published in the instance record (membership's `tags`). Default: none. */
  tags?: readonly string[];
  /**
   * Health checks (membership's); their aggregate is published as the record's `health`, and with
   * `settings.unhealthy: 'drain'` a `failing` instance gets no partitions. Default: none.
   */
  checks?: readonly CheckOptions[];
  /** Session TTL. Default: {@link DEFAULT_PARTITION_TTL_MS}. */
  ttl?: Duration;
  /** How long a release waits for the work to stop. Default: {@link DEFAULT_STOP_TIMEOUT_MS}. */
  stopTimeout?: Duration;
  /** Hand-offs away from this instance in flight at once. Default: {@link DEFAULT_MAX_CONCURRENT_MOVES}. */
  maxConcurrentMoves?: number;
  /** Acquisitions in flight at once. Default: {@link DEFAULT_MAX_CONCURRENT_ACQUIRES}. */
  maxConcurrentAcquires?: number;
  /** Delay before retrying a failed store operation. Default: {@link DEFAULT_RETRY_DELAY_MS}. */
  retryDelay?: Duration;
  /** After a lost session, join again with a new one. Default: true. */
  rejoin?: boolean;
  /** Key root. Default: `/muster/`. */
  root?: string;
  clock?: Clock;
  logger?: PartitionsLogger;
  /**
   * The store whose watched view this handle shares with other handles of the process. Default:
   * `store`. Simulations give each instance its own faulty wrapper of one store and share the view
   * of the unwrapped store, so that a thousand instances cost one watch.
   */
  viewStore?: Store;
  /** Aborts joining; aborting later closes the handle (gracefully). */
  signal?: AbortSignal;
}

/** Events of a {@link PartitionedHandle}; a listener that throws is reported and ignored. */
export interface PartitionedEvents extends Record<string, unknown[]> {
  /** The owner key was created and `onAcquire` was called. */
  acquired: [partition: string, token: number];
  /** The work stopped and the owner key was deleted. */
  released: [partition: string, token: number];
  /** The work was stopped without a release: the session or the key was lost. */
  lost: [partition: string, token: number, cause: StopCause, validUntil: number];
  /** The handle changed state. */
  state: [state: PartitionedState];
  /** Something went wrong in the background (a handler threw, a write failed, a stop timed out). */
  error: [error: unknown];
}

/** A partition this instance owns, as exposed by `handle.assumed`. */
export interface AssumedPartition {
  readonly token: number;
  /** Wall-clock ms when it was acquired. */
  readonly since: number;
}
