/**
 * The one boundary where gRPC and etcd errors become muster errors.
 *
 * The client's `GrpcError` (grpc.ts) carries the gRPC status `code` and the server's message
 * (`etcdserver: …`) in `message` after the status line (`14 UNAVAILABLE: …`); this module reads
 * both, so the same condition gets the same code whichever path produced it. Retry logic reads only
 * {@link MusterError.retryable}.
 */
import { type ErrorDetails, MusterError } from '../../errors.js';
import { NoEndpointError } from './client.js';
import { ClosedError } from './grpc.js';

/** etcd server messages (from `rpctypes`) and the muster code each becomes. */
const SERVER_MESSAGES: readonly [string, ServerErrorKind][] = [
  ['mvcc: required revision has been compacted', 'compacted'],
  ['mvcc: required revision is a future revision', 'future'],
  ['requested lease not found', 'lease'],
  ['permission denied', 'denied'],
  ['authentication failed', 'denied'],
  ['user name is empty', 'denied'],
  ['invalid auth token', 'token'],
  ['authentication is not enabled', 'denied'],
  ['request is too large', 'too-large'],
  ['too many operations in txn request', 'txn-too-large'],
  ['duplicate key given in txn request', 'invalid'],
  ['key is not provided', 'invalid'],
  ['too large lease TTL', 'invalid'],
  ['lease TTL too large', 'invalid'],
  ['mvcc: database space exceeded', 'no-space'],
  ['no leader', 'unavailable'],
  ['leader changed', 'unavailable'],
  ['not leader', 'unavailable'],
  ['request timed out', 'unavailable'],
  ['request cancelled', 'unavailable'],
  ['server stopped', 'unavailable'],
  ['too many requests', 'unavailable'],
  ['not capable', 'unavailable'],
  ['unhealthy cluster', 'unavailable'],
  ['raft: stopped', 'unavailable'],
];

type ServerErrorKind =
  | 'compacted'
  | 'future'
  | 'lease'
  | 'denied'
  | 'too-large'
  | 'txn-too-large'
  | 'invalid'
  | 'no-space'
  | 'token'
  | 'unavailable';

/** gRPC status codes that mean "try again, maybe elsewhere". */
const RETRYABLE_GRPC = new Set([1, 4, 8, 10, 13, 14]);

/**
 * Translates anything thrown by the etcd client into a {@link MusterError}. MusterErrors pass
 * through unchanged. `context` fills `details` (key, revision, lease) for the message and callers.
 *
 * Codes: `MUSTER_COMPACTED`, `MUSTER_FUTURE_REVISION`, `MUSTER_LEASE_NOT_FOUND`,
 * `MUSTER_PERMISSION_DENIED`, `MUSTER_VALUE_TOO_LARGE`, `MUSTER_TXN_TOO_LARGE`,
 * `MUSTER_INVALID_ARGUMENT`, `MUSTER_TIMEOUT` and `MUSTER_UNAVAILABLE` (both retryable),
 * `MUSTER_CLOSED`, and `MUSTER_INTERNAL` for anything unrecognised.
 */
export function fromEtcdError(err: unknown, context: ErrorDetails = {}): MusterError {
  if (err instanceof MusterError) return err;
  const message = err instanceof Error ? err.message : String(err);
  const details: ErrorDetails = { ...context };

  if (err instanceof ClosedError) {
    return new MusterError('MUSTER_CLOSED', 'the etcd store was closed; open a new one', {
      cause: err,
      details,
    });
  }
  if (err instanceof NoEndpointError) {
    return new MusterError('MUSTER_UNAVAILABLE', err.details, { cause: err, details });
  }

  const serverKind = SERVER_MESSAGES.find(([text]) => message.includes(text))?.[1];
  if (serverKind !== undefined) return fromServerKind(serverKind, message, err, details);

  const grpcCode = grpcCodeOf(err, message);
  if (grpcCode === 4) {
    return new MusterError('MUSTER_TIMEOUT', `etcd did not answer in time (${message})`, {
      cause: err,
      details,
    });
  }
  if (grpcCode === 7 || grpcCode === 16) {
    return new MusterError('MUSTER_PERMISSION_DENIED', `etcd refused the request: ${message}`, {
      cause: err,
      details,
    });
  }
  if (grpcCode === 8 && /larger than max|message larger/i.test(message)) {
    return new MusterError(
      'MUSTER_VALUE_TOO_LARGE',
      `the request or response is too large for gRPC: ${message}`,
      {
        cause: err,
        details,
      },
    );
  }
  if (grpcCode !== undefined && RETRYABLE_GRPC.has(grpcCode)) {
    return new MusterError('MUSTER_UNAVAILABLE', `etcd is unreachable or failed the request: ${message}`, {
      cause: err,
      details,
    });
  }
  if (grpcCode === 3) {
    return new MusterError('MUSTER_INVALID_ARGUMENT', `etcd rejected the request: ${message}`, {
      cause: err,
      details,
    });
  }
  if (/ECONNREFUSED|ECONNRESET|EPIPE|ETIMEDOUT|EHOSTUNREACH|socket hang up/.test(message)) {
    return new MusterError('MUSTER_UNAVAILABLE', `etcd is unreachable: ${message}`, { cause: err, details });
  }
  return new MusterError('MUSTER_INTERNAL', `unexpected error from the etcd client: ${message}`, {
    cause: err,
    details,
  });
}

function fromServerKind(
  kind: ServerErrorKind,
  message: string,
  err: unknown,
  details: ErrorDetails,
): MusterError {
  switch (kind) {
    case 'compacted':
      return new MusterError(
        'MUSTER_COMPACTED',
        `revision ${details.revision ?? '?'} has been compacted; re-list and watch from the new revision`,
        { cause: err, details },
      );
    case 'future':
      return new MusterError(
        'MUSTER_FUTURE_REVISION',
        `revision ${details.revision ?? '?'} is newer than the store head`,
        {
          cause: err,
          details,
        },
      );
    case 'lease':
      return new MusterError(
        'MUSTER_LEASE_NOT_FOUND',
        `lease ${details.lease ?? '?'} does not exist (expired, revoked or never granted)`,
        { cause: err, details },
      );
    case 'denied':
      return new MusterError(
        'MUSTER_PERMISSION_DENIED',
        `etcd refused the credentials or the operation (${message}); check the user, password and role`,
        { cause: err, details },
      );
    case 'too-large':
      return new MusterError('MUSTER_VALUE_TOO_LARGE', `etcd refused the request as too large (${message})`, {
        cause: err,
        details,
      });
    case 'txn-too-large':
      return new MusterError(
        'MUSTER_TXN_TOO_LARGE',
        `etcd refused the transaction: ${message} (see --max-txn-ops)`,
        {
          cause: err,
          details,
        },
      );
    case 'invalid':
      return new MusterError('MUSTER_INVALID_ARGUMENT', `etcd rejected the request: ${message}`, {
        cause: err,
        details,
      });
    case 'no-space':
      return new MusterError(
        'MUSTER_UNAVAILABLE',
        `etcd is out of space and accepts only reads and deletes (${message}); compact, defragment and disarm the alarm`,
        { cause: err, details, retryable: false },
      );
    case 'token':
      // The token expired (etcd's simple tokens live 5 minutes): the client fetches a new one.
      return new MusterError(
        'MUSTER_UNAVAILABLE',
        `the etcd auth token expired; retry with a fresh one (${message})`,
        {
          cause: err,
          details,
        },
      );
    case 'unavailable':
      return new MusterError('MUSTER_UNAVAILABLE', `etcd cannot serve the request right now: ${message}`, {
        cause: err,
        details,
      });
  }
}

/** The gRPC status code: from `code` when present, else from a "14 UNAVAILABLE: …" message. */
function grpcCodeOf(err: unknown, message: string): number | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'number') return code;
  const m = /^(?:\w+:\s*)?(\d{1,2}) [A-Z_]+:/.exec(message);
  return m ? Number(m[1]) : undefined;
}
