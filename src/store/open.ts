/**
 * `openStore(url, options)`: one factory for every engine, chosen by the URL's scheme.
 *
 * - `memory:` — an in-process engine (tests, simulations, single-process use).
 * - `etcd://host:2379[,host2:2379…]`, `etcds://…` — a real etcd cluster or `muster serve`.
 * - `postgres://user@host:5432/db?schema=muster` (`postgresql://` too) — tables in a PostgreSQL database.
 */
import type { Clock } from '../clock.js';
import { MusterError } from '../errors.js';
import { MemoryStore } from './memory/memory-store.js';
import type { EtcdStoreOptions } from './etcd/url.js';
import type { PostgresStoreOptions } from './postgres/url.js';
import type { Store } from './types.js';

export interface OpenStoreOptions {
  /** Clock for the memory engine's lease expiry. Default: the system clock. */
  clock?: Clock;
  /** Engine-specific options (see docs/store.md). */
  [option: string]: unknown;
}

/** The store URL used when none is given: a local `muster serve` (or etcd) on the default port. */
export const DEFAULT_STORE_URL = 'etcd://127.0.0.1:2379';

/** Makes a store from the full URL (etcd URLs list several hosts, which WHATWG `URL` cannot parse). */
type EngineFactory = (url: string, options: OpenStoreOptions) => Promise<Store>;

const ENGINES = new Map<string, EngineFactory>([
  [
    'memory:',
    async (url, options) => new MemoryStore({ url, ...(options.clock ? { clock: options.clock } : {}) }),
  ],
]);

/** Registers an engine for a URL scheme (e.g. `'etcd:'`). Used by the engines themselves. */
export function registerEngine(scheme: string, factory: EngineFactory): void {
  ENGINES.set(scheme, factory);
}

/**
 * Opens a store by URL. Throws `MUSTER_UNSUPPORTED_URL` for an unknown scheme or a malformed URL;
 * engine-specific connection errors surface as the engine's coded errors.
 */
export async function openStore(url: string, options: OpenStoreOptions = {}): Promise<Store> {
  if (typeof url !== 'string' || url.length === 0) {
    throw new MusterError(
      'MUSTER_UNSUPPORTED_URL',
      'a store URL is required, e.g. memory: or etcd://127.0.0.1:2379',
    );
  }
  const scheme = /^[a-z][a-z0-9+.-]*:/i.exec(url)?.[0].toLowerCase();
  if (scheme === undefined) {
    throw new MusterError(
      'MUSTER_UNSUPPORTED_URL',
      `'${redactUrl(url)}' is not a URL; use memory: or etcd://host:2379`,
    );
  }
  await LAZY_ENGINES[scheme]?.();
  const factory = ENGINES.get(scheme);
  if (factory === undefined) {
    const known = [...new Set([...ENGINES.keys(), ...Object.keys(LAZY_ENGINES)])];
    throw new MusterError(
      'MUSTER_UNSUPPORTED_URL',
      `no store engine for '${scheme}'; known: ${known.join(', ')}`,
      { details: { url: redactUrl(url) } },
    );
  }
  return factory(url, options);
}

/** Loads `load` once; later calls share the first promise. */
function once(load: () => Promise<void>): () => Promise<void> {
  let loaded: Promise<void> | undefined;
  return () => (loaded ??= load());
}

const loadEtcd = once(() =>
  import('./etcd/index.js').then(({ openEtcdStore }) => {
    const etcd: EngineFactory = async (url, options) => openEtcdStore(url, options as EtcdStoreOptions);
    registerEngine('etcd:', etcd);
    registerEngine('etcds:', etcd);
  }),
);

const loadPostgres = once(() =>
  import('./postgres/index.js').then(({ openPostgresStore }) => {
    const postgres: EngineFactory = (url, options) => openPostgresStore(url, options as PostgresStoreOptions);
    registerEngine('postgres:', postgres);
    registerEngine('postgresql:', postgres);
  }),
);

/**
 * The optional engines, loaded on first use of their scheme only: `memory:` users never load gRPC,
 * and an etcd user (every agent) never loads `pg` (about 3 MB of heap).
 */
const LAZY_ENGINES: Readonly<Record<string, () => Promise<void>>> = {
  'etcd:': loadEtcd,
  'etcds:': loadEtcd,
  'postgres:': loadPostgres,
  'postgresql:': loadPostgres,
};

/** A URL with any password removed, for logs and errors. */
export function redactUrl(url: string): string {
  if (/^etcds?:/i.test(url)) return url.replace(/^(etcds?:\/\/[^:@/]*):[^@/]*@/i, '$1:***@');
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return url.replace(/\/\/[^@/]*@/, '//***@');
  }
}
