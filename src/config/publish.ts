/**
 * The publisher side: create a configuration, schedule versions, cancel them, read the timeline.
 *
 * The lead-time rule lives here. A version may activate no sooner than `minLeadTime` after the
 * publisher's clock reading before the commit; after the commit is acknowledged the publisher checks
 * again that `activateAt > ack + maxStaleness + 2·maxClockSkew`, and withdraws the version if a slow
 * commit ate the margin. With the staleness rule on the process side this gives invariant 1 (see
 * docs/config.md for the proof).
 */
import { hostname, userInfo } from 'node:os';
import { type Clock, systemClock } from '../clock.js';
import { invalidArgument, MusterError, throwIfAborted } from '../errors.js';
import type { KeyValue, Store } from '../store/index.js';
import { type Duration, formatDuration, toMillis } from '../util/duration.js';
import {
  type ConfigPolicy,
  ConfigKeys,
  type ConfigPolicyOptions,
  type ConfigVersion,
  configRoot,
  decodePolicy,
  decodeVersion,
  encodePolicy,
  encodeVersion,
  resolvePolicy,
  validateValue,
} from './model.js';
import { Timeline } from './timeline.js';

/** Attempts at a publication when concurrent publishers race for the same version number. */
export const PUBLISH_ATTEMPTS = 5;

export interface ConfigAccessOptions {
  /** Default: the system clock. */
  clock?: Clock;
  /** The key root. Default `'/muster/'` (`DEFAULT_ROOT`), as for membership and partitions. */
  root?: string;
  /** @deprecated Use `root`; read when `root` is not given. */
  rootPrefix?: string;
  signal?: AbortSignal;
}

export interface PublishOptions extends ConfigAccessOptions {
  /** Activation instant: epoch ms, a Date, or an ISO-8601 string. Exactly one of `at` and `in`. */
  at?: number | Date | string;
  /** Activation delay from now, e.g. `'5m'`. */
  in?: Duration;
  note?: string;
  /** Default: `user@host`. */
  author?: string;
}

/** Everything stored for one configuration. */
export interface ConfigState {
  readonly name: string;
  readonly policy: ConfigPolicy;
  /** Every kept version, cancelled ones included, in version order. */
  readonly versions: readonly ConfigVersion[];
  readonly revision: number;
}

/**
 * Creates configuration `name` with its policy. Throws `MUSTER_ALREADY_EXISTS` when it exists,
 * `MUSTER_INVALID_ARGUMENT` for bounds that break the lead-time rule, `MUSTER_SCHEMA_VIOLATION` for a
 * schema that does not compile.
 */
export async function initConfig(
  store: Store,
  name: string,
  policy: ConfigPolicyOptions = {},
  options: ConfigAccessOptions = {},
): Promise<ConfigPolicy> {
  const keys = new ConfigKeys(name, configRoot(options));
  const resolved = resolvePolicy(policy, (options.clock ?? systemClock).now());
  throwIfAborted(options.signal);
  const r = await store.txn(
    [{ key: keys.policy, target: 'version', op: '=', value: 0 }],
    [{ type: 'put', key: keys.policy, value: encodePolicy(resolved) }],
    [],
    withSignal(options.signal),
  );
  if (!r.succeeded) {
    throw new MusterError('MUSTER_ALREADY_EXISTS', `configuration '${name}' already exists`, {
      details: { config: name },
    });
  }
  return resolved;
}

/** Reads a configuration's policy and versions. Throws `MUSTER_NOT_FOUND` when it was never initialised. */
export async function readConfig(
  store: Store,
  name: string,
  options: ConfigAccessOptions = {},
): Promise<ConfigState> {
  const keys = new ConfigKeys(name, configRoot(options));
  const r = await store.range(keys.prefix, withSignal(options.signal));
  const policyKv = r.kvs.find((kv) => kv.key === keys.policy);
  if (policyKv === undefined) throw notFound(name);
  const versions: ConfigVersion[] = [];
  for (const kv of r.kvs) {
    if (kv.key.startsWith(keys.versions)) versions.push(decodeVersion(kv.value, kv.key));
  }
  versions.sort((a, b) => a.version - b.version);
  return { name, policy: decodePolicy(policyKv.value, policyKv.key), versions, revision: r.revision };
}

/** The in-force view of a state: cancelled versions left out. */
export function timelineOf<T = unknown>(state: ConfigState): Timeline<T> {
  return new Timeline(state.versions.filter((v) => v.cancelledAt === undefined) as ConfigVersion<T>[]);
}

/**
 * Schedules `value` as the next version of `name`. Validates against the schema
 * (`MUSTER_SCHEMA_VIOLATION`), refuses an activation in the past or sooner than `minLeadTime`
 * (`MUSTER_LEAD_TIME`, naming the earliest allowed instant), `MUSTER_NOT_FOUND` for an unknown name.
 * Commits in one transaction that fails if another publisher took the number (then retries).
 */
export async function publishConfig<T>(
  store: Store,
  name: string,
  value: T,
  options: PublishOptions,
): Promise<ConfigVersion<T>> {
  const clock = options.clock ?? systemClock;
  const keys = new ConfigKeys(name, configRoot(options));
  const json = toJsonValue(value);
  for (let attempt = 1; ; attempt++) {
    throwIfAborted(options.signal);
    const r = await store.range(keys.prefix, withSignal(options.signal));
    const policyKv = r.kvs.find((kv) => kv.key === keys.policy);
    if (policyKv === undefined) throw notFound(name);
    const policy = decodePolicy(policyKv.value, policyKv.key);
    validateValue(policy.schema, json, `the value for configuration '${name}'`);
    const versionKvs = r.kvs.filter((kv) => kv.key.startsWith(keys.versions));
    const last =
      versionKvs.length === 0 ? 0 : decodeVersion(lastOf(versionKvs).value, lastOf(versionKvs).key).version;
    const now = clock.now();
    const activateAt = resolveActivation(options, now);
    checkLeadTime(name, policy, activateAt, now, 'activate');
    const record: ConfigVersion<T> = {
      version: last + 1,
      activateAt,
      value: json as T,
      createdAt: now,
      author: options.author ?? defaultAuthor(),
      ...(options.note === undefined ? {} : { note: options.note }),
    };
    const key = keys.version(record.version);
    const txn = await store.txn(
      [
        { key: keys.policy, target: 'modRevision', op: '=', value: policyKv.modRevision },
        { key, target: 'version', op: '=', value: 0 },
      ],
      [{ type: 'put', key, value: encodeVersion(record) }],
      [],
      withSignal(options.signal),
    );
    if (!txn.succeeded) {
      if (attempt < PUBLISH_ATTEMPTS) continue;
      throw new MusterError(
        'MUSTER_UNAVAILABLE',
        `configuration '${name}' is being published concurrently; retry`,
        {
          details: { config: name },
        },
      );
    }
    await afterCommit(store, name, policy, record, key, txn.revision, clock);
    await trim(store, keys, policy, versionKvs, clock.now()).catch(() => undefined);
    return record;
  }
}

/**
 * Cancels a scheduled version while it is still at least `minLeadTime` away (`MUSTER_LEAD_TIME`
 * otherwise). `MUSTER_NOT_FOUND` for an unknown name or version. Cancelling twice is a no-op.
 */
export async function cancelConfig(
  store: Store,
  name: string,
  version: number,
  options: ConfigAccessOptions = {},
): Promise<ConfigVersion> {
  const clock = options.clock ?? systemClock;
  const keys = new ConfigKeys(name, configRoot(options));
  if (!Number.isSafeInteger(version) || version < 1) {
    throw invalidArgument(`version must be a positive integer, got ${String(version)}`);
  }
  const state = await readConfig(store, name, options);
  const key = keys.version(version);
  const kv = await store.get(key, withSignal(options.signal));
  if (kv === undefined) {
    throw new MusterError('MUSTER_NOT_FOUND', `configuration '${name}' has no version ${version}`, {
      details: { config: name, version },
    });
  }
  const v = decodeVersion(kv.value, key);
  if (v.cancelledAt !== undefined) return v;
  const now = clock.now();
  checkLeadTime(name, state.policy, v.activateAt, now, 'cancel');
  const cancelled: ConfigVersion = { ...v, cancelledAt: now };
  const r = await store.txn(
    [{ key, target: 'modRevision', op: '=', value: kv.modRevision }],
    [{ type: 'put', key, value: encodeVersion(cancelled) }],
    [],
    withSignal(options.signal),
  );
  if (!r.succeeded) return cancelConfig(store, name, version, options);
  const margin = state.policy.maxStalenessMs + 2 * state.policy.maxClockSkewMs;
  if (!(v.activateAt > clock.now() + margin)) {
    throw new MusterError(
      'MUSTER_LEAD_TIME',
      `the cancellation of version ${version} was committed, but so slowly that processes may not see it ` +
        `before ${new Date(v.activateAt).toISOString()}; check the timeline`,
      { details: { config: name, version, activateAt: v.activateAt } },
    );
  }
  return cancelled;
}

// ---- helpers ---------------------------------------------------------------------------------------

/** After the commit: a slow commit may have eaten the lead-time slack; then withdraw the version. */
async function afterCommit<T>(
  store: Store,
  name: string,
  policy: ConfigPolicy,
  record: ConfigVersion<T>,
  key: string,
  revision: number,
  clock: Clock,
): Promise<void> {
  const acked = clock.now();
  const margin = policy.maxStalenessMs + 2 * policy.maxClockSkewMs;
  if (record.activateAt > acked + margin) return;
  await store.txn(
    [{ key, target: 'modRevision', op: '=', value: revision }],
    [{ type: 'put', key, value: encodeVersion({ ...record, cancelledAt: clock.now() }) }],
  );
  throw new MusterError(
    'MUSTER_LEAD_TIME',
    `the store took ${formatDuration(acked - record.createdAt)} to commit version ${record.version}, leaving less than ` +
      `maxStaleness + 2·maxClockSkew = ${formatDuration(margin)} before activation; it was withdrawn. ` +
      `Publish again with a later activation`,
    { details: { config: name, version: record.version, activateAt: record.activateAt } },
  );
}

function checkLeadTime(
  name: string,
  policy: ConfigPolicy,
  activateAt: number,
  now: number,
  what: 'activate' | 'cancel',
): void {
  const earliest = now + policy.minLeadTimeMs;
  if (activateAt >= earliest) return;
  const iso = new Date(activateAt).toISOString();
  const past = activateAt <= now;
  const message =
    what === 'activate'
      ? past
        ? `activation ${iso} is in the past; the earliest allowed instant is ${new Date(earliest).toISOString()}`
        : `activation ${iso} is sooner than minLeadTime ${formatDuration(policy.minLeadTimeMs)} from now; ` +
          `the earliest allowed instant is ${new Date(earliest).toISOString()}`
      : `the version activates at ${iso}, less than minLeadTime ${formatDuration(policy.minLeadTimeMs)} from now, ` +
        `so processes may already rely on it; publish a new version instead`;
  throw new MusterError('MUSTER_LEAD_TIME', message, {
    details: { config: name, activateAt, earliest, minLeadTimeMs: policy.minLeadTimeMs },
  });
}

function resolveActivation(options: PublishOptions, now: number): number {
  if ((options.at === undefined) === (options.in === undefined)) {
    throw invalidArgument('give exactly one of `at` (an instant) and `in` (a delay from now)');
  }
  if (options.in !== undefined) return now + toMillis(options.in, 'in');
  const at = options.at;
  const t = at instanceof Date ? at.getTime() : typeof at === 'string' ? Date.parse(at) : at;
  if (typeof t !== 'number' || !Number.isFinite(t)) {
    throw invalidArgument(`'at' must be an instant (epoch ms, Date or ISO-8601), got ${String(at)}`);
  }
  return t;
}

/** Deletes the oldest versions beyond `keepVersions`, never the one in force or anything later. */
async function trim(
  store: Store,
  keys: ConfigKeys,
  policy: ConfigPolicy,
  versionKvs: readonly KeyValue[],
  now: number,
): Promise<void> {
  const excess = versionKvs.length + 1 - policy.keepVersions;
  if (excess <= 0) return;
  const versions = versionKvs.map((kv) => decodeVersion(kv.value, kv.key));
  const inForce = new Timeline(versions.filter((v) => v.cancelledAt === undefined)).at(now);
  const victims = versions
    .filter((v) => inForce !== undefined && v.version < inForce.version && v.activateAt <= inForce.activateAt)
    .slice(0, excess);
  for (const v of victims) await store.delete(keys.version(v.version));
}

function toJsonValue(value: unknown): unknown {
  let text: string | undefined;
  try {
    text = JSON.stringify(value);
  } catch (err) {
    throw new MusterError('MUSTER_SCHEMA_VIOLATION', 'the value is not JSON-serialisable', { cause: err });
  }
  if (text === undefined) throw new MusterError('MUSTER_SCHEMA_VIOLATION', 'the value is not a JSON value');
  return JSON.parse(text) as unknown;
}

function lastOf<X>(xs: readonly X[]): X {
  return xs[xs.length - 1] as X;
}

function notFound(name: string): MusterError {
  return new MusterError(
    'MUSTER_NOT_FOUND',
    `configuration '${name}' does not exist; create it with 'muster config init ${name}'`,
    { details: { config: name } },
  );
}

function withSignal(signal: AbortSignal | undefined): { signal?: AbortSignal } {
  return signal === undefined ? {} : { signal };
}

function defaultAuthor(): string {
  try {
    return `${userInfo().username}@${hostname()}`;
  } catch {
    return hostname();
  }
}
