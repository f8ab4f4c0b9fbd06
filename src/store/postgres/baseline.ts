/**
 * The benchmark's yardstick for the revision counter: the same write (upsert the key, append the
 * event; one statement, one round trip, as the engine's `put()`) with the event's number from a SEQUENCE instead of the locked `meta` row — what the engine
 * would do if it accepted a sequence's gaps and out-of-commit-order numbers. Only the benchmark
 * uses it (`npm run bench -- postgres`); it lives here because only this folder imports `pg`.
 */
import pg from 'pg';

/**
 * Runs `ops` writes with `inflight` at a time in schema `muster_seq_baseline` of `url` (dropped and
 * re-created first) and returns the elapsed milliseconds.
 */
export async function sequenceBaseline(url: string, ops: number, inflight: number): Promise<number> {
  const pool = new pg.Pool({ connectionString: url, max: inflight });
  pool.on('error', () => undefined);
  try {
    await pool.query('DROP SCHEMA IF EXISTS muster_seq_baseline CASCADE');
    await pool.query('CREATE SCHEMA muster_seq_baseline');
    await pool.query(`CREATE SEQUENCE muster_seq_baseline.rev`);
    await pool.query(
      `CREATE TABLE muster_seq_baseline.kv (key bytea PRIMARY KEY, value bytea NOT NULL, mod_revision bigint NOT NULL, version bigint NOT NULL)`,
    );
    await pool.query(
      `CREATE TABLE muster_seq_baseline.history (revision bigint PRIMARY KEY, key bytea NOT NULL, value bytea NOT NULL)`,
    );
    let next = 0;
    const t0 = performance.now();
    const worker = async (): Promise<void> => {
      const client = await pool.connect();
      try {
        for (let i = next++; i < ops; i = next++) {
          const key = Buffer.from(`/bench/${i % 1000}`);
          const value = Buffer.from(String(i));
          await client.query(
            `WITH r AS (SELECT nextval('muster_seq_baseline.rev') AS revision),
             up AS (INSERT INTO muster_seq_baseline.kv AS k (key, value, mod_revision, version)
                    SELECT $1, $2, revision, 1 FROM r
                    ON CONFLICT (key) DO UPDATE SET value = excluded.value, mod_revision = excluded.mod_revision, version = k.version + 1
                    RETURNING mod_revision)
             INSERT INTO muster_seq_baseline.history (revision, key, value) SELECT mod_revision, $1, $2 FROM up`,
            [key, value],
          );
        }
      } finally {
        client.release();
      }
    };
    await Promise.all(Array.from({ length: inflight }, worker));
    const elapsed = performance.now() - t0;
    await pool.query('DROP SCHEMA muster_seq_baseline CASCADE');
    return elapsed;
  } finally {
    await pool.end();
  }
}
