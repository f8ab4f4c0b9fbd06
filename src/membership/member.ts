/**
 * Joining a service: the instance record `services/<service>/instances/<id>`, attached to a session's
 * lease, so it disappears by itself when the instance dies and at once when it leaves.
 */
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import type { Clock } from '../clock.js';
import { isMusterError, MusterError, throwIfAborted } from '../errors.js';
import { jsonBytes } from '../store/index.js';
import type { Store } from '../store/index.js';
import type { Duration } from '../util/duration.js';
import { Emitter, type Listenable } from '../util/emitter.js';
import { type CheckAction, type CheckHandler, type CheckOptions, HealthChecks } from './checks.js';
import { checkSegment, serviceKeys } from './keys.js';
import { openSession, type Session } from './session.js';
import {
  checkAddress,
  checkNotes,
  checkState,
  checkTags,
  checkWeight,
  type HealthStatus,
  type InstanceRecord,
  type InstanceState,
} from './types.js';
import { onAbort } from '../util/abort.js';

export interface JoinOptions {
  /** The service to join (1–63 letters, digits, `.`, `_`, `-`). Required. */
  service: string;
  /** Instance id, unique among live instances. Default: {@link defaultInstanceId} (host-pid-random). */
  id?: string;
  /** Where the instance listens: `host:port` or a URL. Default: none. */
  address?: string;
  /** Relative share of work, ≥ 0. Default: 1. */
  weight?: number;
  /** Default: none. */
  tags?: readonly string[];
  /** Notes for operators ({@link InstanceRecord.notes}). Default: none. */
  notes?: Readonly<Record<string, string>>;
  /** Initial state. Default: `active`. */
  state?: InstanceState;
  /** Session whose lease holds the record. Default: a new session the member owns and closes on leave. */
  session?: Session;
  /** TTL of the member's own session (ignored with `session`). Default: the session default, 3 s. */
  ttl?: Duration;
  /** Health checks to start; their aggregate is published as `health`. Default: none. */
  checks?: readonly CheckOptions[];
  /** Hooks for the checks' built-in `restart` and `release` actions (the agent provides them). */
  actions?: Partial<Record<CheckAction, CheckHandler>>;
  /** Key root. Default: `/muster/`. */
  root?: string;
  clock?: Clock;
  /** Aborts the join; once joined, aborting it closes the member's own session (not a given one). */
  signal?: AbortSignal;
}

/** `<host>-<pid>-<4 hex>`: unique across hosts, processes and restarts, and readable in a table. */
export function defaultInstanceId(): string {
  const host =
    hostname()
      .split('.')[0]
      ?.replace(/[^A-Za-z0-9_-]/g, '-') || 'host';
  return `${host}-${process.pid}-${randomBytes(2).toString('hex')}`;
}

/** Events of a {@link Member}. */
export interface MemberEvents extends Record<string, unknown[]> {
  /** The published record changed. */
  updated: [record: InstanceRecord];
  /** A background publication (health change) failed. */
  error: [error: unknown];
}

/**
 * Registers an instance in a service. The record carries the session's lease.
 *
 * Throws `MUSTER_INVALID_ARGUMENT` (empty or malformed service, id, address, weight, tags, TTL),
 * `MUSTER_DUPLICATE_INSTANCE` when a live instance already has the id (never steals it),
 * `MUSTER_SESSION_LOST` when the given session is not valid, and the store's errors. On failure
 * nothing is left behind: a session opened for the join is closed again.
 */
export async function join(store: Store, options: JoinOptions): Promise<Member> {
  const keys = serviceKeys(options.root, options.service);
  const id = options.id ?? defaultInstanceId();
  checkSegment(id, 'instance id');
  if (options.address !== undefined) checkAddress(options.address);
  if (options.weight !== undefined) checkWeight(options.weight);
  if (options.tags !== undefined) checkTags(options.tags);
  if (options.notes !== undefined) checkNotes(options.notes);
  if (options.state !== undefined) checkState(options.state);
  const checks = new HealthChecks({
    ...(options.clock ? { clock: options.clock } : {}),
    ...(options.actions ? { actions: options.actions } : {}),
  });
  throwIfAborted(options.signal);
  const owned = options.session === undefined;
  const session =
    options.session ??
    (await openSession(store, {
      ...(options.ttl === undefined ? {} : { ttl: options.ttl }),
      ...(options.clock ? { clock: options.clock } : {}),
      ...(options.signal ? { signal: options.signal } : {}),
    }));
  try {
    // Add checks before the first write so their initial statuses are in the first record.
    for (const c of options.checks ?? []) checks.add(c);
    session.throwIfInvalid();
    const record: InstanceRecord = {
      id,
      address: options.address ?? null,
      weight: options.weight ?? 1,
      state: options.state ?? 'active',
      health: checks.health(),
      tags: [...(options.tags ?? [])],
      startedAt: new Date((options.clock ?? { now: Date.now }).now()).toISOString(),
      ...(options.checks?.length ? { checks: checks.statuses() } : {}),
      ...(options.notes !== undefined && Object.keys(options.notes).length > 0
        ? { notes: { ...options.notes } }
        : {}),
    };
    const key = keys.instance(id);
    const r = await store.txn(
      [{ key, target: 'createRevision', op: '=', value: 0 }],
      [{ type: 'put', key, value: jsonBytes(record), lease: session.leaseId }],
      [{ type: 'range', selector: { key } }],
      options.signal ? { signal: options.signal } : {},
    );
    if (!r.succeeded) {
      const holder = r.results[0]?.type === 'range' ? r.results[0].kvs[0] : undefined;
      throw new MusterError(
        'MUSTER_DUPLICATE_INSTANCE',
        `instance '${id}' is already registered in service '${keys.service}' by a live instance; choose another id or wait for it to leave`,
        { details: { key, lease: holder?.lease, service: keys.service, id } },
      );
    }
    return new Member(store, session, owned, key, keys.service, record, checks);
  } catch (err) {
    checks.close();
    if (owned) await session.close();
    throw err;
  }
}

/** What a member is doing: `joined` until `leave()` (`left`) or its session ends (`lost`). */
export type MemberState = 'joined' | 'left' | 'lost';

/** A joined instance. Updates go to the store in order; `leave()` deletes the record at once. */
export class Member implements Listenable<MemberEvents> {
  readonly id: string;
  readonly service: string;
  /** The record's key. */
  readonly key: string;
  readonly session: Session;
  /** The instance's health checks; add more at any time. */
  readonly checks: HealthChecks;
  readonly #store: Store;
  readonly #ownsSession: boolean;
  readonly #events = new Emitter<MemberEvents>();
  #record: InstanceRecord;
  #state: MemberState = 'joined';
  #writes: Promise<unknown> = Promise.resolve();
  #leaving: Promise<void> | undefined;

  /** @internal Use {@link join}. */
  constructor(
    store: Store,
    session: Session,
    owned: boolean,
    key: string,
    service: string,
    record: InstanceRecord,
    checks: HealthChecks,
  ) {
    this.#store = store;
    this.session = session;
    this.#ownsSession = owned;
    this.key = key;
    this.service = service;
    this.id = record.id;
    this.#record = record;
    this.checks = checks;
    checks.on('change', (health, statuses) => this.#publishHealth(health, statuses));
    // A check may have flipped while the record was being created.
    const statuses = checks.statuses();
    if (
      checks.health() !== record.health ||
      JSON.stringify(statuses) !== JSON.stringify(record.checks ?? {})
    ) {
      this.#publishHealth(checks.health(), statuses);
    }
    onAbort(session.lost, () => {
      if (this.#state === 'joined') this.#state = 'lost';
      checks.close();
    });
  }

  get state(): MemberState {
    return this.#state;
  }

  /** The record as last written. */
  get record(): InstanceRecord {
    return this.#record;
  }

  /** Aborts when the member's session is lost or closed. */
  get lost(): AbortSignal {
    return this.session.lost;
  }

  on<K extends keyof MemberEvents>(event: K, listener: (...args: MemberEvents[K]) => void): () => void {
    return this.#events.on(event, listener);
  }
  once<K extends keyof MemberEvents>(event: K, listener: (...args: MemberEvents[K]) => void): () => void {
    return this.#events.once(event, listener);
  }
  off<K extends keyof MemberEvents>(event: K, listener: (...args: MemberEvents[K]) => void): void {
    this.#events.off(event, listener);
  }

  /** Sets `active`, `draining` or `leaving`. */
  setState(state: InstanceState): Promise<InstanceRecord> {
    checkState(state);
    return this.update({ state });
  }

  /** Stops receiving new work; shorthand for `setState('draining')`. */
  drain(): Promise<InstanceRecord> {
    return this.setState('draining');
  }

  /**
   * Changes fields of the record. Throws `MUSTER_INVALID_ARGUMENT` for bad values,
   * `MUSTER_SESSION_LOST` when the session is gone or the record was removed, `MUSTER_CLOSED` after leave.
   */
  update(changes: {
    state?: InstanceState;
    weight?: number;
    tags?: readonly string[];
    address?: string | null;
    /** Replaces the notes; `{}` removes them. */
    notes?: Readonly<Record<string, string>>;
  }): Promise<InstanceRecord> {
    if (changes.state !== undefined) checkState(changes.state);
    if (changes.weight !== undefined) checkWeight(changes.weight);
    if (changes.tags !== undefined) checkTags(changes.tags);
    if (changes.address !== undefined && changes.address !== null) checkAddress(changes.address);
    if (changes.notes !== undefined) checkNotes(changes.notes);
    return this.#write((r) => {
      const { notes: _old, ...rest } = r;
      const notes = changes.notes === undefined ? r.notes : changes.notes;
      return {
        ...rest,
        ...(changes.state === undefined ? {} : { state: changes.state }),
        ...(changes.weight === undefined ? {} : { weight: changes.weight }),
        ...(changes.tags === undefined ? {} : { tags: [...changes.tags] }),
        ...(changes.address === undefined ? {} : { address: changes.address }),
        ...(notes !== undefined && Object.keys(notes).length > 0 ? { notes: { ...notes } } : {}),
      };
    });
  }

  /**
   * Leaves the service: stops the checks and deletes the record at once (watchers see it within
   * milliseconds), then closes the session if the member opened it. Idempotent; never rejects —
   * if the store is unreachable, the record goes when the lease expires.
   */
  leave(): Promise<void> {
    this.#leaving ??= this.#leave();
    return this.#leaving;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.leave();
  }

  async #leave(): Promise<void> {
    const wasJoined = this.#state === 'joined';
    this.#state = 'left';
    this.checks.close();
    await this.#writes.catch(() => undefined);
    if (wasJoined) {
      try {
        await this.#store.txn(
          [{ key: this.key, target: 'lease', op: '=', value: this.session.leaseId }],
          [{ type: 'delete', selector: { key: this.key } }],
        );
      } catch {
        // Unreachable: the lease expiry removes the record.
      }
    }
    if (this.#ownsSession) await this.session.close();
  }

  #publishHealth(health: HealthStatus, checks: Readonly<Record<string, HealthStatus>>): void {
    if (this.#state !== 'joined') return;
    this.#write((r) => ({ ...r, health, checks })).catch((err: unknown) => {
      if (this.#state === 'joined') this.#events.emit('error', err);
    });
  }

  /** Serializes record writes; each is a compare-and-put on the member's own lease. */
  #write(change: (r: InstanceRecord) => InstanceRecord): Promise<InstanceRecord> {
    const next = this.#writes
      .catch(() => undefined)
      .then(async () => {
        if (this.#state === 'left') throw new MusterError('MUSTER_CLOSED', `instance '${this.id}' has left`);
        this.session.throwIfInvalid();
        const record = change(this.#record);
        const r = await this.#store.txn(
          [{ key: this.key, target: 'lease', op: '=', value: this.session.leaseId }],
          [{ type: 'put', key: this.key, value: jsonBytes(record), lease: this.session.leaseId }],
        );
        if (!r.succeeded) {
          throw new MusterError(
            'MUSTER_SESSION_LOST',
            `the record of instance '${this.id}' is gone (lease expired or record deleted)`,
            {
              details: { key: this.key, lease: this.session.leaseId },
            },
          );
        }
        this.#record = record;
        this.#events.emit('updated', record);
        return record;
      });
    this.#writes = next;
    return next;
  }
}

/** True when `err` means the member can no longer publish (its session or record is gone). */
export function isMemberGone(err: unknown): boolean {
  return isMusterError(err, 'MUSTER_SESSION_LOST') || isMusterError(err, 'MUSTER_CLOSED');
}
