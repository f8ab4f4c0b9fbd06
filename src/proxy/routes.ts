/**
 * Route pins and drains, as the CLI writes them: `services/<s>/routes/<key>` → `{ instance }`, and
 * `services/<s>/drain/<instance>` (placement then moves its partitions away at the throttle's pace).
 */
import { invalidArgument, MusterError } from '../errors.js';
import { checkSegment, serviceKeys } from '../membership/index.js';
import { deleteRoute, putRoute } from '../partitions/index.js';
import type { Store } from '../store/index.js';
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
 * Drains `instance`: writes `services/<s>/drain/<instance>` under the instance's own lease, so the
 * drain lasts as long as this registration of the instance and no longer. Placement gives a drained
 * instance nothing new and moves its partitions away, a few at a time. The key is the instance's
 * record's neighbour, not a field of it: the instance rewriting its own record (a health or notes
 * change) cannot clear the drain. Resolves to the write's revision; `MUSTER_NOT_FOUND` when the
 * instance is not registered. Idempotent.
 */
export async function drainInstance(
  store: Store,
  service: string,
  instance: string,
  options: RouteOptions = {},
): Promise<number> {
  checkSegment(instance, 'instance id');
  const keys = serviceKeys(options.root, service);
  const key = keys.instance(instance);
  for (let attempt = 0; attempt < 5; attempt++) {
    const kv = await store.get(key);
    if (kv === undefined) throw notRegistered(service, instance, key);
    const value = JSON.stringify({ instance, at: new Date().toISOString() });
    // Only while this registration lives: a record re-created in between (another lease) is tried again.
    const r = await store.txn(
      [{ key, target: 'createRevision', op: '=', value: kv.createRevision }],
      [{ type: 'put', key: keys.drain(instance), value, ...(kv.lease === '0' ? {} : { lease: kv.lease }) }],
    );
    if (r.succeeded) return r.revision;
  }
  throw new MusterError('MUSTER_UNAVAILABLE', `instance ${instance}'s record kept changing; try again`, {
    details: { key },
  });
}

/**
 * Ends an operator's drain of `instance` (deletes its `drain/<instance>` key): placement may give it
 * partitions again. Resolves to the store head after it; `MUSTER_NOT_FOUND` when it was not drained.
 */
export async function undrainInstance(
  store: Store,
  service: string,
  instance: string,
  options: RouteOptions = {},
): Promise<number> {
  checkSegment(instance, 'instance id');
  const key = serviceKeys(options.root, service).drain(instance);
  const r = await store.delete(key);
  if (r.deleted === 0)
    throw new MusterError('MUSTER_NOT_FOUND', `instance ${instance} is not drained in service ${service}`, {
      details: { key },
    });
  return r.revision;
}

function notRegistered(service: string, instance: string, key: string): MusterError {
  return new MusterError('MUSTER_NOT_FOUND', `instance ${instance} is not registered in service ${service}`, {
    details: { key },
  });
}
