/**
 * Parses `postgres://` store URLs and resolves the engine's options once.
 *
 * `postgres://[user[:password]@]host[:port]/database[?schema=muster&sslmode=require…]` (also
 * `postgresql://`). Everything but muster's own parameters (`schema`, `poolMax`) is passed to
 * node-postgres, which reads `sslmode`, `sslrootcert`, `sslcert`, `sslkey`, `host` (a unix socket
 * directory) and `application_name` from the URL, and fills whatever the URL leaves out from the
 * standard `PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD`, `PGDATABASE` and `PGSSLMODE` variables, as
 * `psql` does. Explicit options win over the URL.
 */
import { invalidArgument, MusterError } from '../../errors.js';
import { type Duration, toMillis } from '../../util/duration.js';

/** Options of the PostgreSQL engine. Every field is optional. */
export interface PostgresStoreOptions {
  /** The schema holding muster's tables (also `?schema=`). Default: {@link DEFAULT_SCHEMA}. */
  schema?: string;
  /** Most connections in the pool (also `?poolMax=`). Default: {@link DEFAULT_POOL_MAX}. */
  poolMax?: number;
  /** Server-side `statement_timeout` and the wait for a pooled connection. Default: {@link DEFAULT_PG_REQUEST_TIMEOUT}. */
  requestTimeout?: Duration;
  /** How often each client looks for expired leases. Default: {@link DEFAULT_REAP_INTERVAL}. */
  reapInterval?: Duration;
  /**
   * How often watches check the head revision even without a notification (the safety net under
   * LISTEN/NOTIFY). Default: {@link DEFAULT_WATCH_POLL_INTERVAL}.
   */
  watchPollInterval?: Duration;
}

/** `muster`: one schema per deployment; several deployments share a database with `?schema=`. */
export const DEFAULT_SCHEMA = 'muster';
/**
 * 10 connections: writers serialise on the revision row anyway, so more connections buy reads only;
 * PostgreSQL's default `max_connections` is 100, and every muster process holds its own pool.
 */
export const DEFAULT_POOL_MAX = 10;
/** 10 s: longer than any healthy statement; a stuck one frees the revision row instead of holding it. */
export const DEFAULT_PG_REQUEST_TIMEOUT = '10s';
/** 500 ms: a lease is deleted at most this long after it expires by the database clock (etcd: ~500 ms). */
export const DEFAULT_REAP_INTERVAL = '500ms';
/** 1 s: a lost notification delays a watch by at most this long (one cheap query per store per tick). */
export const DEFAULT_WATCH_POLL_INTERVAL = '1s';

/** The options after resolution: every field set. */
export interface ResolvedPostgresOptions {
  /** The URL handed to node-postgres (muster's own parameters removed). */
  readonly connectionString: string;
  readonly schema: string;
  readonly poolMax: number;
  readonly requestTimeoutMs: number;
  readonly reapIntervalMs: number;
  readonly watchPollIntervalMs: number;
  /** The URL with the password removed, for logs. */
  readonly redactedUrl: string;
}

const SCHEMA_NAME = /^[a-z_][a-z0-9_]{0,47}$/;

/**
 * Parses a PostgreSQL store URL and merges the options. Throws `MUSTER_UNSUPPORTED_URL` for a URL
 * that is not `postgres://` or `postgresql://`, `MUSTER_INVALID_ARGUMENT` for a bad schema name or
 * option.
 */
export function resolvePostgresOptions(
  url: string,
  options: PostgresStoreOptions = {},
): ResolvedPostgresOptions {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch (err) {
    throw new MusterError('MUSTER_UNSUPPORTED_URL', `'${redact(url)}' is not a valid postgres:// URL`, {
      cause: err,
    });
  }
  if (parsed.protocol !== 'postgres:' && parsed.protocol !== 'postgresql:') {
    throw new MusterError(
      'MUSTER_UNSUPPORTED_URL',
      `'${parsed.protocol}' is not a PostgreSQL URL; use postgres://user@host:5432/db?schema=muster`,
    );
  }
  const schema = options.schema ?? parsed.searchParams.get('schema') ?? DEFAULT_SCHEMA;
  if (!SCHEMA_NAME.test(schema)) {
    throw invalidArgument(
      `schema '${schema}' must be a lower-case SQL identifier (letters, digits, _; at most 48 characters)`,
    );
  }
  const poolParam = parsed.searchParams.get('poolMax');
  const poolMax = options.poolMax ?? (poolParam === null ? DEFAULT_POOL_MAX : Number(poolParam));
  if (!Number.isInteger(poolMax) || poolMax < 2 || poolMax > 1000) {
    throw invalidArgument(
      `poolMax must be an integer between 2 and 1000 (one connection is for transactions, one for reads), got ${String(poolMax)}`,
    );
  }
  parsed.searchParams.delete('schema');
  parsed.searchParams.delete('poolMax');
  return {
    connectionString: parsed.toString(),
    schema,
    poolMax,
    requestTimeoutMs: toMillis(options.requestTimeout ?? DEFAULT_PG_REQUEST_TIMEOUT, 'requestTimeout'),
    reapIntervalMs: toMillis(options.reapInterval ?? DEFAULT_REAP_INTERVAL, 'reapInterval'),
    watchPollIntervalMs: toMillis(
      options.watchPollInterval ?? DEFAULT_WATCH_POLL_INTERVAL,
      'watchPollInterval',
    ),
    redactedUrl: redact(url),
  };
}

function redact(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return url.replace(/\/\/[^@/]*@/, '//***@');
  }
}
