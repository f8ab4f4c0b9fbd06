/**
 * The one boundary where muster errors become the gRPC statuses a real etcd sends.
 *
 * Messages are etcd's own (`rpctypes`), so clients that recognise etcd errors by message — the
 * `etcd3` package, etcdctl, muster's etcd engine — treat `muster serve` exactly like etcd.
 */
import { isMusterError } from '../../errors.js';
import { status, type StatusCode } from './call.js';

/** An error that already carries the gRPC status and message etcd would send. */
export class EtcdStatusError extends Error {
  readonly code: StatusCode;
  readonly details: string;

  constructor(code: StatusCode, details: string) {
    super(details);
    this.code = code;
    this.details = details;
  }
}

/** etcd's messages, by name. */
export const ETCD = {
  emptyKey: () => new EtcdStatusError(status.INVALID_ARGUMENT, 'etcdserver: key is not provided'),
  keyNotFound: () => new EtcdStatusError(status.INVALID_ARGUMENT, 'etcdserver: key not found'),
  valueProvided: () => new EtcdStatusError(status.INVALID_ARGUMENT, 'etcdserver: value is provided'),
  leaseProvided: () => new EtcdStatusError(status.INVALID_ARGUMENT, 'etcdserver: lease is provided'),
  duplicateKey: () =>
    new EtcdStatusError(status.INVALID_ARGUMENT, 'etcdserver: duplicate key given in txn request'),
  tooManyOps: () =>
    new EtcdStatusError(status.INVALID_ARGUMENT, 'etcdserver: too many operations in txn request'),
  tooLarge: () => new EtcdStatusError(status.INVALID_ARGUMENT, 'etcdserver: request is too large'),
  compacted: () =>
    new EtcdStatusError(status.OUT_OF_RANGE, 'etcdserver: mvcc: required revision has been compacted'),
  futureRev: () =>
    new EtcdStatusError(status.OUT_OF_RANGE, 'etcdserver: mvcc: required revision is a future revision'),
  leaseNotFound: () => new EtcdStatusError(status.NOT_FOUND, 'etcdserver: requested lease not found'),
  leaseTtlTooLarge: () => new EtcdStatusError(status.OUT_OF_RANGE, 'etcdserver: too large lease TTL'),
  userEmpty: () => new EtcdStatusError(status.INVALID_ARGUMENT, 'etcdserver: user name is empty'),
  authFailed: () =>
    new EtcdStatusError(
      status.INVALID_ARGUMENT,
      'etcdserver: authentication failed, invalid user ID or password',
    ),
  invalidToken: () => new EtcdStatusError(status.UNAUTHENTICATED, 'etcdserver: invalid auth token'),
  noSpace: () => new EtcdStatusError(status.RESOURCE_EXHAUSTED, 'etcdserver: mvcc: database space exceeded'),
  stopped: () => new EtcdStatusError(status.UNAVAILABLE, 'etcdserver: server stopped'),
  /** A request etcd accepts but muster serve does not support; the message says what to do. */
  unsupported: (what: string) =>
    new EtcdStatusError(
      status.INVALID_ARGUMENT,
      `muster serve: ${what} is not supported; use a real etcd for it`,
    ),
  invalid: (message: string) => new EtcdStatusError(status.INVALID_ARGUMENT, `muster serve: ${message}`),
} as const;

/** Translates anything a handler threw into the status etcd would send for the same condition. */
export function toGrpcError(err: unknown): EtcdStatusError {
  if (err instanceof EtcdStatusError) return err;
  if (isMusterError(err)) {
    switch (err.code) {
      case 'MUSTER_COMPACTED':
        return ETCD.compacted();
      case 'MUSTER_FUTURE_REVISION':
        return ETCD.futureRev();
      case 'MUSTER_LEASE_NOT_FOUND':
        return ETCD.leaseNotFound();
      case 'MUSTER_VALUE_TOO_LARGE':
        return ETCD.tooLarge();
      case 'MUSTER_TXN_TOO_LARGE':
        return ETCD.tooManyOps();
      case 'MUSTER_INVALID_ARGUMENT':
        if (/twice|both puts and deletes/.test(err.message)) return ETCD.duplicateKey();
        return ETCD.invalid(err.message);
      case 'MUSTER_CLOSED':
        return ETCD.stopped();
      case 'MUSTER_PERMISSION_DENIED':
        return new EtcdStatusError(status.PERMISSION_DENIED, err.message);
      default:
        return new EtcdStatusError(status.INTERNAL, `muster serve: ${err.code}: ${err.message}`);
    }
  }
  const message = err instanceof Error ? err.message : String(err);
  return new EtcdStatusError(status.INTERNAL, `muster serve: internal error: ${message}`);
}
