/**
 * Route pins and drains, as the CLI writes them: `services/<s>/routes/<key>` → `{ instance }`, and an
 * instance record's `state: draining` (placement then moves its partitions away at the throttle's pace).
 */
import { invalidArgument, MusterError } from '../errors.js';
import { checkSegment, serviceKeys } from '../membership/index.js';
import { deleteRoute, putRoute } from '../partitions/index.js';
import { jsonOf, type Store } from '../store/index.js';
import { isValidKey } from './key.js';
import { openRoutingSource } from './store-routing-source.js';
import { RoutingTable, type Resolution } from './table.js';

export interface RouteOptions {
  readonly root?: string | undefined;
}

function checkKey(key: string): void {
  if (!isValidKey(key)) {
    throw invalidArgument(
      `a routing key must be 1–128 characters without '/', whitespace or control characters, got ${JSON.stringify(key)}`,
    );
  }
}

/** Pins `key` to `instance` (the instance need not be live yet). Resolves to the write's revision. */
export async function pinRoute(
  store: Store,
  service: string,
  key: string,
  instance: string,
  options: RouteOptions = {},
): Promise<number> {
  checkKey(key);
  return putRoute(store, service, key, instance, options.root === undefined ? {} : { root: options.root });
}

/** Removes the pin of `key` (resolves to the store head after it); `MUSTER_NOT_FOUND` when there was none. */
export async function unpinRoute(
  store: Store,
  service: string,
  key: string,
  options: RouteOptions = {},
): Promise<number> {
  checkKey(key);
  const deleted = await deleteRoute(
    store,
    service,
    key,
    options.root === undefined ? {} : { root: options.root },
  );
  if (!deleted)
    throw new MusterError('MUSTER_NOT_FOUND', `key ${key} has no route pin in service ${service}`, {
      details: { key },
    });
  return store.headRevision();
}

/** Where `key` goes now and why (a one-shot read of the routing state). */
export async function explainRoute(
  store: Store,
  service: string,
  key: string,
  options: RouteOptions & { partitions?: number | undefined } = {},
): Promise<Resolution & { key: string; revision: number }> {
  checkKey(key);
  const source = openRoutingSource(store, service, { root: options.root });
  try {
    await source.ready();
    return { key, revision: source.revision, ...new RoutingTable(source, options.partitions).resolve(key) };
  } finally {
    source.close();
  }
}

/**
 * Marks `instance` draining in its (leased) record, keeping its lease: placement gives it nothing
 * new and moves its partitions away, a few at a time. `MUSTER_NOT_FOUND` when it is not registered.
 */
export async function drainInstance(
  store: Store,
  service: string,
  instance: string,
  options: RouteOptions = {},
): Promise<number> {
  checkSegment(instance, 'instance id');
  const key = serviceKeys(options.root, service).instance(instance);
  for (let attempt = 0; attempt < 5; attempt++) {
    const kv = await store.get(key);
    if (kv === undefined)
      throw new MusterError(
        'MUSTER_NOT_FOUND',
        `instance ${instance} is not registered in service ${service}`,
        { details: { key } },
      );
    const record = { ...jsonOf<Record<string, unknown>>(kv.value, key), state: 'draining' };
    const r = await store.txn(
      [{ key, target: 'modRevision', op: '=', value: kv.modRevision }],
      [{ type: 'put', key, value: JSON.stringify(record), ...(kv.lease === '0' ? {} : { lease: kv.lease }) }],
    );
    if (r.succeeded) return r.revision;
  }
  throw new MusterError('MUSTER_UNAVAILABLE', `instance ${instance}'s record kept changing; try again`, {
    details: { key },
  });
}
