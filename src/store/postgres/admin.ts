/**
 * One-off SQL on a PostgreSQL server, for the test harness and operators' tools (creating a
 * database, terminating a connection): the rest of muster never imports `pg` (only this folder does).
 */
import pg from 'pg';
import { fromPgError } from './errors.js';

/**
 * Connects to `url` (a plain PostgreSQL URL, e.g. `postgres://muster@127.0.0.1:5432/postgres`),
 * runs one statement and disconnects. Resolves the rows; errors are coded by {@link fromPgError}.
 */
export async function adminQuery<R extends Record<string, unknown> = Record<string, unknown>>(
  url: string,
  text: string,
  params: unknown[] = [],
): Promise<R[]> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5000 });
  client.on('error', () => undefined);
  try {
    await client.connect();
    const res = await client.query<R>(text, params);
    return res.rows;
  } catch (err) {
    throw fromPgError(err);
  } finally {
    await client.end().catch(() => undefined);
  }
}
