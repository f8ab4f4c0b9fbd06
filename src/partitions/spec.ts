/**
 * The service spec (`services/<service>/spec`): the partition set and the settings every instance
 * shares, and the key layout of a service's ownership records.
 */
import { invalidArgument, MusterError } from '../errors.js';
import { jsonBytes, jsonOf } from '../store/index.js';
import type { KeyValue, Store } from '../store/index.js';
import type { ServiceKeys as OwnershipKeys } from '../membership/index.js';
import { checkSegment, serviceKeys as ownershipKeysOf } from '../membership/index.js';
import type { PartitionSettings, PartitionsLogger, ServiceSpec } from './types.js';

export type { ServiceKeys as OwnershipKeys } from '../membership/index.js';
export { serviceKeys as ownershipKeys, checkSegment } from '../membership/index.js';

/** Expands a partition set to its ids. */
export function partitionIds(partitions: readonly string[] | number): string[] {
  return typeof partitions === 'number'
    ? Array.from({ length: partitions }, (_, i) => String(i))
    : [...partitions];
}

/** Validates a spec given by a caller; throws `MUSTER_INVALID_ARGUMENT` naming the problem. */
export function checkSpec(spec: ServiceSpec): void {
  const { partitions, settings } = spec;
  if (typeof partitions === 'number') {
    if (!Number.isSafeInteger(partitions) || partitions < 0 || partitions > 10_000_000) {
      throw invalidArgument(
        `partitions must be a count from 0 to 10,000,000 or a list of ids, got ${partitions}`,
      );
    }
  } else if (Array.isArray(partitions)) {
    const seen = new Set<string>();
    for (const p of partitions) {
      checkSegment(p, 'partition id');
      if (seen.has(p))
        throw invalidArgument(`partition '${p}' appears twice in the partition set`, { partition: p });
      seen.add(p);
    }
  } else {
    throw invalidArgument('partitions must be a count or an array of partition ids');
  }
  if (settings === undefined) return;
  if (settings.unhealthy !== undefined && settings.unhealthy !== 'drain' && settings.unhealthy !== 'keep') {
    throw invalidArgument(
      `settings.unhealthy must be 'drain' or 'keep', got ${JSON.stringify(settings.unhealthy)}`,
    );
  }
  if (settings.epsilon !== undefined && !(Number.isFinite(settings.epsilon) && settings.epsilon >= 0)) {
    throw invalidArgument(`settings.epsilon must be a finite number ≥ 0, got ${String(settings.epsilon)}`);
  }
  if (
    settings.seed !== undefined &&
    !(Number.isInteger(settings.seed) && settings.seed >= 0 && settings.seed < 2 ** 32)
  ) {
    throw invalidArgument(`settings.seed must be an integer in [0, 2^32), got ${String(settings.seed)}`);
  }
}

/** Reads a stored spec; `undefined` when the value is not a spec (it is then ignored, and logged). */
export function parseSpec(kv: KeyValue): ServiceSpec | undefined {
  try {
    const raw = jsonOf<ServiceSpec>(kv.value, kv.key);
    checkSpec(raw);
    return raw;
  } catch {
    return undefined;
  }
}

/** A canonical text for comparing specs. */
export function specText(spec: ServiceSpec): string {
  const s: PartitionSettings = spec.settings ?? {};
  return JSON.stringify({
    partitions: spec.partitions,
    settings: { epsilon: s.epsilon, seed: s.seed, unhealthy: s.unhealthy },
  });
}

/**
 * Writes `spec` unless the stored one is equal, with compare-and-set on the stored revision (retried
 * when another instance wrote in between). Logs a warning when it overrides a different stored spec:
 * two deployments disagreeing about the partition set is worth an operator's attention. Resolves to
 * true when it wrote.
 */
export async function publishSpec(
  store: Store,
  keys: OwnershipKeys,
  spec: ServiceSpec,
  logger: PartitionsLogger,
  instance: string,
): Promise<boolean> {
  checkSpec(spec);
  const text = specText(spec);
  for (let attempt = 0; attempt < 10; attempt++) {
    const current = await store.get(keys.spec);
    const stored = current === undefined ? undefined : parseSpec(current);
    if (stored !== undefined && specText(stored) === text) return false;
    const r = await store.txn(
      [{ key: keys.spec, target: 'modRevision', op: '=', value: current?.modRevision ?? 0 }],
      [
        {
          type: 'put',
          key: keys.spec,
          value: jsonBytes({ partitions: spec.partitions, settings: spec.settings ?? {} }),
        },
      ],
    );
    if (r.succeeded) {
      if (current !== undefined) {
        logger.warn(
          { service: keys.service, instance, previous: stored ?? null, next: spec, revision: r.revision },
          `UPDATE PARTITIONS: instance ${instance} replaced the stored spec of service ${keys.service} with its own definition`,
        );
      } else {
        logger.info({ service: keys.service, instance, revision: r.revision }, 'wrote the service spec');
      }
      return true;
    }
  }
  throw new MusterError(
    'MUSTER_UNAVAILABLE',
    `could not write the spec of service ${keys.service}: it kept changing`,
    {
      details: { key: keys.spec },
    },
  );
}

/**
 * The key `<root>services/<service>/routes/<routingKey>` of a pinned routing key. The routing key
 * follows the segment rule (1–128 characters, no `/` or whitespace); throws `MUSTER_INVALID_ARGUMENT`.
 */
export function routeKey(keys: OwnershipKeys, routingKey: string): string {
  checkSegment(routingKey, 'routing key');
  return keys.route(routingKey);
}

/** The routing key of a `routes/<key>` store key of `keys`' service; `undefined` for any other key. */
export function parseRouteKey(keys: OwnershipKeys, key: string): string | undefined {
  if (!key.startsWith(keys.routes)) return undefined;
  const rest = key.slice(keys.routes.length);
  return rest === '' || rest.includes('/') ? undefined : rest;
}

/**
 * Pins `routingKey` of `service` to `instance` (the proxy sends that key's requests to the instance
 * instead of to its partition's owner). Resolves to the write's revision. Throws
 * `MUSTER_INVALID_ARGUMENT` for a bad service, key or instance id, and the store's errors.
 */
export async function putRoute(
  store: Store,
  service: string,
  routingKey: string,
  instance: string,
  options: { root?: string; signal?: AbortSignal } = {},
): Promise<number> {
  const keys = ownershipKeysOf(options.root, service);
  checkSegment(instance, 'instance id');
  const r = await store.put(routeKey(keys, routingKey), jsonBytes({ instance }), {
    ...(options.signal ? { signal: options.signal } : {}),
  });
  return r.revision;
}

/** Removes the pin of `routingKey`; resolves to true when there was one. Same errors as {@link putRoute}. */
export async function deleteRoute(
  store: Store,
  service: string,
  routingKey: string,
  options: { root?: string; signal?: AbortSignal } = {},
): Promise<boolean> {
  const keys = ownershipKeysOf(options.root, service);
  const r = await store.delete(routeKey(keys, routingKey), {
    ...(options.signal ? { signal: options.signal } : {}),
  });
  return r.deleted > 0;
}
