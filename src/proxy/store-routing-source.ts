/**
 * TEMPORARY adapter until Contract C's `openServiceView` (src/partitions/index.ts) lands on main:
 * today src/partitions exports no watched view with addresses and routes, so this file lists the
 * service prefix at a revision and watches from revision + 1 itself (re-listing after a compaction or
 * a broken stream, with capped back-off). When the view lands, this file becomes a thin mapping over
 * it and nothing else in src/proxy/ changes.
 */
import { systemClock } from '../clock.js';
import { isMusterError } from '../errors.js';
import { serviceKeys } from '../membership/index.js';
import { parseSpec, partitionIds } from '../partitions/index.js';
import { jsonOf, type KeyValue, type Store, type WatchEvent } from '../store/index.js';
import type { RouteInstance, RouteOwner, RoutingSource, RoutingSourceOptions } from './routing-source.js';

/** 2 s: the longest pause between attempts to re-watch a store that went away. */
const MAX_BACKOFF_MS = 2000;

class StoreRoutingSource implements RoutingSource {
  revision = 0;
  updatedAt = 0;
  partitions: readonly string[] | undefined;
  readonly owners = new Map<string, RouteOwner>();
  readonly instances = new Map<string, RouteInstance>();
  readonly routes = new Map<string, { readonly instance: string }>();
  readonly #store: Store;
  readonly #prefix: string;
  readonly #spec: string;
  readonly #closer = new AbortController();
  readonly #listeners = new Set<() => void>();
  readonly #clock;
  #ready: Promise<void> | undefined;
  #notifyQueued = false;

  constructor(store: Store, service: string, options: RoutingSourceOptions) {
    const keys = serviceKeys(options.root, service);
    this.#store = store;
    this.#prefix = keys.prefix;
    this.#spec = keys.spec;
    this.#clock = options.clock ?? systemClock;
  }

  ready(options: { signal?: AbortSignal } = {}): Promise<void> {
    this.#ready ??= this.#load().then(() => {
      void this.#watchLoop();
    });
    const signal = options.signal;
    if (signal === undefined) return this.#ready;
    return Promise.race([
      this.#ready,
      new Promise<void>((_, reject) => {
        if (signal.aborted) reject(signal.reason as Error);
        signal.addEventListener('abort', () => reject(signal.reason as Error), { once: true });
      }),
    ]);
  }

  subscribe(listener: () => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  close(): void {
    this.#closer.abort();
    this.#listeners.clear();
  }

  async #load(): Promise<void> {
    const r = await this.#store.range(this.#prefix, { signal: this.#closer.signal });
    this.partitions = undefined;
    this.owners.clear();
    this.instances.clear();
    this.routes.clear();
    for (const kv of r.kvs) this.#apply({ type: 'put', kv });
    this.revision = r.revision;
    this.#changed();
  }

  async #watchLoop(): Promise<void> {
    let delay = 100;
    while (!this.#closer.signal.aborted) {
      try {
        const watch = this.#store.watch(this.#prefix, {
          fromRevision: this.revision + 1,
          signal: this.#closer.signal,
        });
        for await (const batch of watch) {
          delay = 100;
          if (batch.type === 'events') for (const e of batch.events) this.#apply(e);
          if (batch.revision > this.revision) this.revision = batch.revision;
          this.#changed();
        }
      } catch (err) {
        if (this.#closer.signal.aborted || isMusterError(err, 'MUSTER_CLOSED')) return;
        await this.#clock.sleep(delay * (0.5 + Math.random()), this.#closer.signal).catch(() => undefined);
        delay = Math.min(delay * 2, MAX_BACKOFF_MS);
        if (isMusterError(err, 'MUSTER_COMPACTED')) await this.#load().catch(() => undefined);
      }
    }
  }

  #apply(e: WatchEvent): void {
    const key = e.kv.key;
    if (key === this.#spec) {
      const spec = e.type === 'put' ? parseSpec(e.kv) : undefined;
      this.partitions = spec === undefined ? undefined : partitionIds(spec.partitions);
      return;
    }
    const rest = key.slice(this.#prefix.length);
    const slash = rest.indexOf('/');
    const kind = rest.slice(0, slash);
    const id = rest.slice(slash + 1);
    if (kind === 'owners') {
      if (e.type === 'delete') this.owners.delete(id);
      else this.owners.set(id, parseOwner(e.kv));
    } else if (kind === 'instances') {
      if (e.type === 'delete') this.instances.delete(id);
      else this.instances.set(id, { address: stringField(json(e.kv), 'address') });
    } else if (kind === 'routes') {
      const instance = e.type === 'put' ? stringField(json(e.kv), 'instance') : undefined;
      if (instance === undefined) this.routes.delete(id);
      else this.routes.set(id, { instance });
    }
  }

  #changed(): void {
    this.updatedAt = performance.now();
    if (this.#notifyQueued) return;
    this.#notifyQueued = true;
    setImmediate(() => {
      this.#notifyQueued = false;
      for (const l of [...this.#listeners]) l();
    });
  }
}

function json(kv: KeyValue): unknown {
  try {
    return jsonOf<unknown>(kv.value, kv.key);
  } catch {
    return undefined;
  }
}

function stringField(raw: unknown, field: string): string | undefined {
  if (typeof raw !== 'object' || raw === null) return undefined;
  const v = (raw as Record<string, unknown>)[field];
  return typeof v === 'string' && v !== '' ? v : undefined;
}

function parseOwner(kv: KeyValue): RouteOwner {
  const raw = json(kv);
  return {
    instance: stringField(raw, 'instance') ?? '',
    token: kv.createRevision,
    address: stringField(raw, 'address'),
    moving: typeof raw === 'object' && raw !== null && (raw as { moving?: unknown }).moving === true,
  };
}

/** Opens the watched routing state of `service` on `store`. Call `ready()` before routing. */
export function openRoutingSource(
  store: Store,
  service: string,
  options: RoutingSourceOptions = {},
): RoutingSource {
  return new StoreRoutingSource(store, service, options);
}
