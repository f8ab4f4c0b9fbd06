/**
 * The PostgreSQL engine: `postgres://` and `postgresql://` stores. Only this folder imports `pg`.
 */
export { PostgresStore, openPostgresStore } from './postgres-store.js';
export { fromPgError } from './errors.js';
export { checkServerVersion, MIN_SERVER_VERSION_NUM, MIGRATIONS, SCHEMA_VERSION } from './schema.js';
export {
  type PostgresStoreOptions,
  DEFAULT_SCHEMA,
  DEFAULT_POOL_MAX,
  DEFAULT_PG_REQUEST_TIMEOUT,
  DEFAULT_REAP_INTERVAL,
  DEFAULT_WATCH_POLL_INTERVAL,
  resolvePostgresOptions,
} from './url.js';
export { adminQuery } from './admin.js';
export { sequenceBaseline } from './baseline.js';
