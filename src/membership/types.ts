/** The instance record and the types shared by membership, discovery and health checks. */
import { invalidArgument } from '../errors.js';
import type { KeyValue, LeaseId } from '../store/index.js';
import { jsonOf } from '../store/index.js';

/**
 * An instance's lifecycle as others see it: `active` takes work; `draining` keeps serving what it has
 * but receives nothing new; `leaving` is about to delete its record.
 */
export type InstanceState = 'active' | 'draining' | 'leaving';
export const INSTANCE_STATES: readonly InstanceState[] = ['active', 'draining', 'leaving'];

/** Consul's check statuses, renamed: passing, warning, failing (Consul's "critical"). */
export type HealthStatus = 'passing' | 'warning' | 'failing';
export const HEALTH_STATUSES: readonly HealthStatus[] = ['passing', 'warning', 'failing'];

/** How bad a status is: passing 0 < warning 1 < failing 2. */
export function severity(status: HealthStatus): number {
  return status === 'passing' ? 0 : status === 'warning' ? 1 : 2;
}

/** The JSON value of `services/<service>/instances/<id>`. */
export interface InstanceRecord {
  readonly id: string;
  /** `host:port` (or a URL) where the instance listens; `null` when it serves nothing. */
  readonly address: string | null;
  /** Relative share of work and traffic, ≥ 0 (0: receives nothing). */
  readonly weight: number;
  readonly state: InstanceState;
  /** Aggregate health of the checks that mark the instance unhealthy; `passing` without checks. */
  readonly health: HealthStatus;
  readonly tags: readonly string[];
  /** ISO-8601 time the instance joined. */
  readonly startedAt: string;
  /** Status of each named check, including informational ones. */
  readonly checks?: Readonly<Record<string, HealthStatus>>;
  /**
   * What the instance tells operators about itself, by name (e.g. the agent's
   * `handoff/<partition>`: why it handed a partition on, and to whom). Absent when there is none.
   */
  readonly notes?: Readonly<Record<string, string>>;
}

/** A record as read from the store, with its service and key metadata. */
export interface Instance extends InstanceRecord {
  readonly service: string;
  readonly key: string;
  readonly lease: LeaseId;
  readonly createRevision: number;
  readonly modRevision: number;
}

/**
 * True when the instance should receive new work: active, not failing, with weight. The one rule of
 * discovery, the bus and an agent handing a partition on (placement's own eligibility also honours
 * `unhealthyDrains`, partitions/view.ts).
 */
export function isHealthy(instance: {
  readonly state: string;
  readonly health: string;
  readonly weight: number;
}): boolean {
  return instance.state === 'active' && instance.health !== 'failing' && instance.weight > 0;
}

/**
 * The instance as the fleet sees it: an `active` record whose id has an operator's drain key
 * (`<root>services/<service>/drain/<id>`, written by `muster drain`) is `draining`; any other record
 * is as written. The one rule for every view of instances — membership's `InstanceView`
 * (discovery, the bus) and the partitions view (placement) — so a drained instance gets no new work
 * of any kind. Returns `record` itself when nothing changes.
 */
export function withDrain(record: Instance, drained: boolean): Instance {
  return drained && record.state === 'active' ? { ...record, state: 'draining' } : record;
}

const HOST = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?)$/;

/** Validates an address: `host:port` (port 1–65535; IPv6 in brackets) or an absolute URL with a host. */
export function checkAddress(address: unknown): asserts address is string {
  const bad = (): never => {
    throw invalidArgument(
      `address must be 'host:port' (port 1–65535, IPv6 in brackets) or a URL such as http://host:port, got ${JSON.stringify(address)}`,
    );
  };
  if (typeof address !== 'string' || address.length === 0 || address.length > 1024) return bad();
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(address)) {
    try {
      if (new URL(address).host === '') bad();
      return;
    } catch {
      return bad();
    }
  }
  const i = address.lastIndexOf(':');
  if (i <= 0) return bad();
  const host = address.slice(0, i);
  const port = address.slice(i + 1);
  if (!HOST.test(host) || !/^\d{1,5}$/.test(port)) return bad();
  const n = Number(port);
  if (n < 1 || n > 65535) bad();
}

/** Validates a weight: a finite number ≥ 0. */
export function checkWeight(weight: unknown): asserts weight is number {
  if (typeof weight !== 'number' || !Number.isFinite(weight) || weight < 0) {
    throw invalidArgument(`weight must be a finite number ≥ 0, got ${JSON.stringify(weight)}`);
  }
}

/** Validates tags: at most 64 non-empty strings of at most 256 characters. */
export function checkTags(tags: unknown): asserts tags is readonly string[] {
  if (
    !Array.isArray(tags) ||
    tags.length > 64 ||
    !tags.every((t) => typeof t === 'string' && t.length > 0 && t.length <= 256)
  ) {
    throw invalidArgument('tags must be an array of at most 64 non-empty strings (≤ 256 characters each)');
  }
}

/** Validates notes: at most 256 entries, names of 1–256 characters, values of at most 4,096. */
export function checkNotes(notes: unknown): asserts notes is Readonly<Record<string, string>> {
  const entries = notes !== null && typeof notes === 'object' ? Object.entries(notes) : undefined;
  if (
    entries === undefined ||
    Array.isArray(notes) ||
    entries.length > 256 ||
    !entries.every(([k, v]) => k.length > 0 && k.length <= 256 && typeof v === 'string' && v.length <= 4096)
  ) {
    throw invalidArgument(
      'notes must be an object of at most 256 names (1–256 characters) to strings of at most 4,096 characters',
    );
  }
}

/** Validates a state name. */
export function checkState(state: unknown): asserts state is InstanceState {
  if (!INSTANCE_STATES.includes(state as InstanceState)) {
    throw invalidArgument(`state must be one of ${INSTANCE_STATES.join(', ')}, got ${JSON.stringify(state)}`);
  }
}

/**
 * Reads an instance record from a key-value: the one parser of instance records, used by discovery,
 * the partitions view and the CLI alike. `undefined` when the value is not a record muster wrote —
 * not a JSON object, no string `id`, or an `id` other than the key's last segment; such keys are
 * skipped by every reader (rather than failing them, or, worse, being read with defaults and
 * receiving work that nobody does). Missing optional fields take their defaults.
 */
export function parseInstance(service: string, kv: KeyValue): Instance | undefined {
  let raw: Partial<InstanceRecord>;
  try {
    raw = jsonOf<Partial<InstanceRecord>>(kv.value, kv.key);
  } catch {
    return undefined;
  }
  if (raw === null || typeof raw !== 'object' || typeof raw.id !== 'string') return undefined;
  if (raw.id === '' || !kv.key.endsWith(`/instances/${raw.id}`)) return undefined;
  const state = INSTANCE_STATES.includes(raw.state as InstanceState)
    ? (raw.state as InstanceState)
    : 'active';
  const health = HEALTH_STATUSES.includes(raw.health as HealthStatus)
    ? (raw.health as HealthStatus)
    : 'passing';
  return {
    id: raw.id,
    address: typeof raw.address === 'string' ? raw.address : null,
    weight: typeof raw.weight === 'number' && raw.weight >= 0 ? raw.weight : 1,
    state,
    health,
    tags: Array.isArray(raw.tags) ? raw.tags.filter((t): t is string => typeof t === 'string') : [],
    startedAt: typeof raw.startedAt === 'string' ? raw.startedAt : '',
    ...(raw.checks && typeof raw.checks === 'object' ? { checks: raw.checks } : {}),
    ...(raw.notes && typeof raw.notes === 'object' && !Array.isArray(raw.notes)
      ? {
          notes: Object.fromEntries(
            Object.entries(raw.notes).filter((e): e is [string, string] => typeof e[1] === 'string'),
          ),
        }
      : {}),
    service,
    key: kv.key,
    lease: kv.lease,
    createRevision: kv.createRevision,
    modRevision: kv.modRevision,
  };
}
