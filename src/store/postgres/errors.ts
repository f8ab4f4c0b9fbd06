/**
 * The one boundary where node-postgres and PostgreSQL errors become muster errors.
 *
 * PostgreSQL reports a five-character SQLSTATE (`err.code`, e.g. `40P01`); its first two characters
 * name the class. node-postgres reports a lost or refused connection as a plain `Error` with a Node
 * `code` (`ECONNREFUSED`) or a message (`Connection terminated unexpectedly`). Retry logic reads only
 * {@link MusterError.retryable}.
 */
import { type ErrorDetails, MusterError } from '../../errors.js';

/** The SQLSTATE the engine's own `put()` function raises for a missing or expired lease. */
export const LEASE_NOT_FOUND_STATE = 'MU404';

/** SQLSTATE classes and codes that mean "the server cannot serve this now; try again". */
const UNAVAILABLE_STATES = new Set([
  '57P01', // admin_shutdown
  '57P02', // crash_shutdown
  '57P03', // cannot_connect_now (starting up, recovering)
  '40001', // serialization_failure: rolled back, safe to repeat
  '40P01', // deadlock_detected: rolled back, safe to repeat
  '55P03', // lock_not_available
  '25006', // read_only_sql_transaction: a hot standby, or a primary demoted during fail-over
]);

/** Node socket errors and node-postgres messages of a lost or refused connection. */
const CONNECTION_ERROR =
  /ECONNREFUSED|ECONNRESET|EPIPE|ETIMEDOUT|EHOSTUNREACH|ENOTFOUND|EAI_AGAIN|Connection terminated|connection timeout|timeout exceeded when trying to connect|Client has encountered a connection error|socket hang up|the database system is (starting up|shutting down|in recovery mode)/i;

/** Node's TLS verification codes (`SELF_SIGNED_CERT_IN_CHAIN`, `UNABLE_TO_VERIFY_LEAF_SIGNATURE`, `ERR_TLS_CERT_ALTNAME_INVALID`…). */
const TLS_CODE = /CERT|^UNABLE_TO_|^ERR_TLS_|^ERR_SSL_/;

/**
 * Translates anything thrown by node-postgres into a {@link MusterError}. MusterErrors pass through
 * unchanged. `context` fills `details` (key, revision, lease).
 *
 * Codes: `MUSTER_UNAVAILABLE` (retryable: connection lost or refused, server shutting down or
 * recovering, a conflict PostgreSQL rolled back, a read-only standby), `MUSTER_TIMEOUT` (retryable:
 * `statement_timeout`), `MUSTER_PERMISSION_DENIED` (password, `pg_hba.conf`, privileges, a server
 * certificate the URL's `sslrootcert` does not trust, TLS asked of a server without it),
 * `MUSTER_INVALID_ARGUMENT` (no such database, bad data), `MUSTER_VALUE_TOO_LARGE`, and
 * `MUSTER_INTERNAL` for anything unrecognised.
 *
 * A write that fails with `MUSTER_UNAVAILABLE` because the connection dropped during `COMMIT` may
 * have been applied: the caller re-reads before repeating a non-idempotent write.
 */
export function fromPgError(err: unknown, context: ErrorDetails = {}): MusterError {
  if (err instanceof MusterError) return err;
  const message = err instanceof Error ? err.message : String(err);
  const code = (err as { code?: unknown } | null)?.code;
  const state = typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) ? code : undefined;
  const details: ErrorDetails = { ...context, ...(state === undefined ? {} : { sqlstate: state }) };
  const make = (muster: ConstructorParameters<typeof MusterError>[0], text: string): MusterError =>
    new MusterError(muster, text, { cause: err, details });

  if (state !== undefined) {
    const cls = state.slice(0, 2);
    if (state === LEASE_NOT_FOUND_STATE) {
      return make(
        'MUSTER_LEASE_NOT_FOUND',
        `lease ${context.lease ?? '?'} does not exist (expired, revoked or never granted)`,
      );
    }
    if (state === '57014')
      return make('MUSTER_TIMEOUT', `PostgreSQL cancelled a statement that ran too long (${message})`);
    if (UNAVAILABLE_STATES.has(state) || cls === '08' || cls === '53' || cls === '58') {
      return make('MUSTER_UNAVAILABLE', `PostgreSQL cannot serve the request right now: ${message}`);
    }
    if (cls === '28' || state === '42501') {
      return make(
        'MUSTER_PERMISSION_DENIED',
        `PostgreSQL refused the credentials or the operation (${message}); check the user, password, pg_hba.conf and grants`,
      );
    }
    if (state === '3D000') {
      return make(
        'MUSTER_INVALID_ARGUMENT',
        `${message}; create it or fix the database name in the store URL`,
      );
    }
    if (state === '54000' || state === '54001') {
      return make('MUSTER_VALUE_TOO_LARGE', `PostgreSQL refused the request as too large (${message})`);
    }
    if (cls === '22') return make('MUSTER_INVALID_ARGUMENT', `PostgreSQL rejected a value: ${message}`);
    return make('MUSTER_INTERNAL', `unexpected PostgreSQL error ${state}: ${message}`);
  }
  if ((typeof code === 'string' && TLS_CODE.test(code)) || /does not support SSL/i.test(message)) {
    return make(
      'MUSTER_PERMISSION_DENIED',
      `TLS with PostgreSQL failed (${message}); check sslmode and sslrootcert in the store URL (or PGSSLMODE) against the server's certificate and its ssl setting`,
    );
  }
  if (CONNECTION_ERROR.test(message) || (typeof code === 'string' && CONNECTION_ERROR.test(code))) {
    return make('MUSTER_UNAVAILABLE', `PostgreSQL is unreachable: ${message}`);
  }
  if (/Query read timeout/i.test(message)) {
    return make('MUSTER_TIMEOUT', `PostgreSQL did not answer in time (${message})`);
  }
  if (/password authentication|SASL|no pg_hba/i.test(message)) {
    return make('MUSTER_PERMISSION_DENIED', `PostgreSQL refused the credentials: ${message}`);
  }
  return make('MUSTER_INTERNAL', `unexpected error from node-postgres: ${message}`);
}
