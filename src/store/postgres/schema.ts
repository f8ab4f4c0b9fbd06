/**
 * The engine's tables, created and upgraded by numbered migrations.
 *
 * `migrate()` runs in one transaction under a transaction-scoped advisory lock keyed by the schema
 * name, so any number of muster processes may start at once against an empty database: the first
 * creates the schema, the others wait on the lock and then find every migration applied. DDL is
 * transactional in PostgreSQL, so a migration that fails leaves nothing half-done.
 *
 * Tables (in the store's schema):
 * - `meta`: one row — the head `revision` and the `compact_revision`. Every writing transaction
 *   locks it first (`SELECT … FOR UPDATE`), which serialises writers and makes revisions gap-free
 *   and in commit order (docs/store.md, "PostgreSQL engine").
 * - `kv`: the current value of every live key (the head).
 * - `history`: one row per event (put or delete tombstone) at `(revision, seq)`: reads at past
 *   revisions and watches are served from it; `compact()` trims it.
 * - `leases`: id, granted TTL, `expires_at` by the database clock.
 */
import type { PoolClient } from 'pg';
import { MusterError } from '../../errors.js';

/** PostgreSQL 13: the oldest release still supported upstream when this engine was written. */
export const MIN_SERVER_VERSION_NUM = 130000;

/** Quotes a (validated) schema name as an SQL identifier. */
export function ident(schema: string): string {
  return `"${schema.replace(/"/g, '""')}"`;
}

/** The numbered migrations; append only — a released migration is never edited. */
export const MIGRATIONS: readonly {
  readonly version: number;
  readonly description: string;
  sql(s: string): string;
}[] = [
  {
    version: 1,
    description: 'meta, kv, history and leases',
    sql: (s) => `
      CREATE TABLE ${s}.meta (
        id smallint PRIMARY KEY CHECK (id = 1),
        revision bigint NOT NULL,
        compact_revision bigint NOT NULL
      );
      INSERT INTO ${s}.meta (id, revision, compact_revision) VALUES (1, 1, 0);
      CREATE TABLE ${s}.kv (
        key bytea PRIMARY KEY,
        value bytea NOT NULL,
        create_revision bigint NOT NULL,
        mod_revision bigint NOT NULL,
        version bigint NOT NULL,
        lease bigint NOT NULL DEFAULT 0
      );
      CREATE INDEX kv_lease ON ${s}.kv (lease) WHERE lease <> 0;
      CREATE TABLE ${s}.history (
        revision bigint NOT NULL,
        seq integer NOT NULL,
        key bytea NOT NULL,
        deleted boolean NOT NULL,
        value bytea NOT NULL,
        create_revision bigint NOT NULL,
        version bigint NOT NULL,
        lease bigint NOT NULL,
        PRIMARY KEY (revision, seq)
      );
      CREATE INDEX history_key_revision ON ${s}.history (key, revision);
      CREATE TABLE ${s}.leases (
        id bigint PRIMARY KEY,
        ttl_seconds integer NOT NULL,
        expires_at timestamptz NOT NULL
      );
      CREATE INDEX leases_expires_at ON ${s}.leases (expires_at);
    `,
  },
  {
    version: 2,
    description: 'put() in one round trip',
    // The whole of a plain put — revision lock, lease check, upsert, event, new head, wake-up — as
    // one statement: one round trip instead of three. Same statements, same order, same isolation
    // as the general path in write.ts (each statement of a VOLATILE function takes a fresh snapshot,
    // so everything after the lock sees the previous writer's commit).
    sql: (s) => `
      CREATE FUNCTION ${s}.put(p_key bytea, p_value bytea, p_lease bigint, p_channel text)
      RETURNS TABLE (o_revision bigint, o_found boolean, o_value bytea, o_create_revision bigint,
                     o_mod_revision bigint, o_version bigint, o_lease bigint)
      LANGUAGE plpgsql VOLATILE AS $fn$
      DECLARE
        v_head bigint;
        v_rev bigint;
        v_prev ${s}.kv%ROWTYPE;
        v_found boolean;
      BEGIN
        SELECT m.revision INTO v_head FROM ${s}.meta m WHERE m.id = 1 FOR UPDATE;
        IF p_lease <> 0 AND NOT EXISTS (
          SELECT 1 FROM ${s}.leases l WHERE l.id = p_lease AND l.expires_at > now()) THEN
          RAISE EXCEPTION 'lease % does not exist', p_lease USING ERRCODE = 'MU404';
        END IF;
        v_rev := v_head + 1;
        SELECT * INTO v_prev FROM ${s}.kv k WHERE k.key = p_key;
        v_found := FOUND;
        INSERT INTO ${s}.kv AS k (key, value, create_revision, mod_revision, version, lease)
        VALUES (p_key, p_value, v_rev, v_rev, 1, p_lease)
        ON CONFLICT (key) DO UPDATE
          SET value = excluded.value, mod_revision = excluded.mod_revision,
              version = k.version + 1, lease = excluded.lease;
        INSERT INTO ${s}.history (revision, seq, key, deleted, value, create_revision, version, lease)
        VALUES (v_rev, 0, p_key, false, p_value,
                CASE WHEN v_found THEN v_prev.create_revision ELSE v_rev END,
                CASE WHEN v_found THEN v_prev.version + 1 ELSE 1 END, p_lease);
        UPDATE ${s}.meta SET revision = v_rev WHERE id = 1;
        PERFORM pg_notify(p_channel, v_rev::text);
        RETURN QUERY SELECT v_rev, v_found, v_prev.value, v_prev.create_revision, v_prev.mod_revision,
                            v_prev.version, v_prev.lease;
      END
      $fn$;
    `,
  },
];

/** The newest schema version this muster knows. */
export const SCHEMA_VERSION = Math.max(...MIGRATIONS.map((m) => m.version));

/**
 * Throws `MUSTER_UNSUPPORTED_SERVER` when `versionNum` (`server_version_num`, e.g. 150004) is older
 * than {@link MIN_SERVER_VERSION_NUM}.
 */
export function checkServerVersion(versionNum: number, versionText = String(versionNum)): void {
  if (!Number.isInteger(versionNum) || versionNum < MIN_SERVER_VERSION_NUM) {
    throw new MusterError(
      'MUSTER_UNSUPPORTED_SERVER',
      `PostgreSQL ${versionText} is older than muster supports; use PostgreSQL ${MIN_SERVER_VERSION_NUM / 10000} or later`,
      { details: { serverVersion: versionText, minimumVersionNum: MIN_SERVER_VERSION_NUM } },
    );
  }
}

/**
 * Checks the server version, then applies every missing migration under the schema's advisory lock,
 * in one transaction. Returns the versions it applied (empty when the schema was current). Throws
 * `MUSTER_UNSUPPORTED_SERVER` for an old server or a schema migrated by a newer muster.
 */
export async function migrate(client: PoolClient, schema: string): Promise<number[]> {
  const version = await client.query<{ num: string; text: string }>(
    "SELECT current_setting('server_version_num') AS num, current_setting('server_version') AS text",
  );
  const row = version.rows[0];
  checkServerVersion(Number(row?.num), row?.text);
  const s = ident(schema);
  const applied: number[] = [];
  await client.query('BEGIN');
  try {
    await client.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`muster.migrate.${schema}`]);
    await client.query(`CREATE SCHEMA IF NOT EXISTS ${s}`);
    await client.query(
      `CREATE TABLE IF NOT EXISTS ${s}.schema_migrations (
         version integer PRIMARY KEY,
         description text NOT NULL,
         applied_at timestamptz NOT NULL DEFAULT now()
       )`,
    );
    const done = await client.query<{ version: number }>(`SELECT version FROM ${s}.schema_migrations`);
    const have = new Set(done.rows.map((r) => Number(r.version)));
    const newest = Math.max(0, ...have);
    if (newest > SCHEMA_VERSION) {
      throw new MusterError(
        'MUSTER_UNSUPPORTED_SERVER',
        `schema ${schema} is at version ${newest}, newer than this muster knows (${SCHEMA_VERSION}); upgrade muster`,
        { details: { schema, schemaVersion: newest, supportedVersion: SCHEMA_VERSION } },
      );
    }
    for (const m of MIGRATIONS) {
      if (have.has(m.version)) continue;
      await client.query(m.sql(s));
      await client.query(`INSERT INTO ${s}.schema_migrations (version, description) VALUES ($1, $2)`, [
        m.version,
        m.description,
      ]);
      applied.push(m.version);
    }
    await client.query('COMMIT');
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  }
  return applied;
}
