/**
 * One error model for the whole package.
 *
 * Every error muster throws on purpose is a {@link MusterError} with a stable `code`. Driver errors
 * (gRPC, etcd, spawn, fs) are translated into these codes at one boundary function per engine, so the
 * same condition has the same code everywhere. Retry logic reads only {@link MusterError.retryable}.
 *
 * `docs/errors.md` lists every code with what the operator should do.
 */

/**
 * Every stable error code, with whether it is retryable by default, the HTTP status a daemon answers
 * it with ({@link httpStatusOf}) and a one-line meaning. One table: a new code gets all three here
 * and a row in `docs/errors.md` (a test keeps them in step).
 */
export const ERROR_CODES = {
  MUSTER_INVALID_ARGUMENT: {
    retryable: false,
    http: 400,
    summary: 'a caller passed a value the API does not accept',
  },
  MUSTER_COMPACTED: {
    retryable: false,
    http: 410,
    summary: 'the requested revision was compacted away; re-list and continue',
  },
  MUSTER_FUTURE_REVISION: {
    retryable: false,
    http: 400,
    summary: 'the requested revision is newer than the store head',
  },
  MUSTER_LEASE_NOT_FOUND: {
    retryable: false,
    http: 404,
    summary: 'the lease does not exist (expired, revoked or never granted)',
  },
  MUSTER_LEASE_LOST: {
    retryable: false,
    http: 409,
    summary: 'a lease this process relied on expired or was revoked',
  },
  MUSTER_UNAVAILABLE: {
    retryable: true,
    http: 503,
    summary: 'the store could not be reached or did not answer in time',
  },
  MUSTER_TIMEOUT: { retryable: true, http: 504, summary: 'an operation did not finish within its deadline' },
  MUSTER_ABORTED: {
    retryable: false,
    http: 503,
    summary: 'the caller aborted the operation through its AbortSignal',
  },
  MUSTER_CLOSED: { retryable: false, http: 503, summary: 'the object was closed; open a new one' },
  MUSTER_UNSUPPORTED_URL: {
    retryable: false,
    http: 400,
    summary: 'the store URL names an engine muster does not know',
  },
  MUSTER_PERMISSION_DENIED: {
    retryable: false,
    http: 403,
    summary: 'the store refused the credentials or the operation',
  },
  MUSTER_VALUE_TOO_LARGE: {
    retryable: false,
    http: 413,
    summary: 'a request or value exceeds the size limit',
  },
  MUSTER_TXN_TOO_LARGE: {
    retryable: false,
    http: 413,
    summary: 'a transaction has more operations than the store allows',
  },
  MUSTER_CORRUPT_DATA: { retryable: false, http: 500, summary: 'on-disk data failed its integrity check' },
  MUSTER_MISSING_BINARY: {
    retryable: false,
    http: 500,
    summary: 'a program muster needs (for example etcd) is not on PATH',
  },
  MUSTER_SPAWN_FAILED: {
    retryable: false,
    http: 500,
    summary:
      'a child process could not be started (command missing or not executable, bad cwd) or exited before it was ready',
  },
  MUSTER_DATA_DIR_LOCKED: {
    retryable: false,
    http: 409,
    summary: 'another live process is using the data directory of muster serve',
  },
  MUSTER_ADDRESS_IN_USE: {
    retryable: false,
    http: 409,
    summary: 'the address muster serve should listen on is taken',
  },
  MUSTER_SESSION_LOST: {
    retryable: false,
    http: 503,
    summary: 'a session passed its validity deadline or its lease is gone; open a new session',
  },
  MUSTER_DUPLICATE_INSTANCE: {
    retryable: false,
    http: 409,
    summary: 'a live instance with the same id is already registered in the service',
  },
  MUSTER_NO_HEALTHY_INSTANCE: {
    retryable: true,
    http: 503,
    summary: 'discovery found no active, healthy instance of the service',
  },
  MUSTER_NOT_OWNER: {
    retryable: false,
    http: 421,
    summary: 'this instance no longer owns the partition (released, session lost or key lost)',
  },
  MUSTER_STOP_TIMEOUT: {
    retryable: false,
    http: 500,
    summary:
      "a partition's work did not stop within the stop timeout; the partition stays owned until it does",
  },
  MUSTER_STALE_CONFIG: {
    retryable: true,
    http: 503,
    summary: 'this process cannot prove, within maxStaleness, that it holds every configuration version',
  },
  MUSTER_MISSING_CONFIG: {
    retryable: true,
    http: 503,
    summary: 'no configuration version is in force at that time',
  },
  MUSTER_LEAD_TIME: {
    retryable: false,
    http: 400,
    summary: 'an activation or cancellation is sooner than the configuration minLeadTime allows',
  },
  MUSTER_SCHEMA_VIOLATION: {
    retryable: false,
    http: 422,
    summary: 'a configuration value does not match its JSON Schema',
  },
  MUSTER_NOT_FOUND: {
    retryable: false,
    http: 404,
    summary: 'the named object (configuration, version…) does not exist',
  },
  MUSTER_ALREADY_EXISTS: { retryable: false, http: 409, summary: 'the named object already exists' },
  MUSTER_NOT_PROPAGATED: {
    retryable: true,
    http: 504,
    summary: 'some live instances did not hold a configuration version before the wait timed out',
  },
  MUSTER_UNAUTHENTICATED: {
    retryable: false,
    http: 401,
    summary: "a request to a daemon's admin API lacked the bearer token or presented a wrong one",
  },
  MUSTER_METHOD_NOT_ALLOWED: {
    retryable: false,
    http: 405,
    summary: "the daemon's admin API has this path but not for this HTTP method",
  },
  MUSTER_AGENT_CONFIG: {
    retryable: false,
    http: 400,
    summary: 'the agent configuration file is malformed or invalid (file, line, field and reason given)',
  },
  MUSTER_RESTART_BUDGET: {
    retryable: false,
    http: 409,
    summary:
      "a partition's child failed more often than its restart budget allows; the partition was handed on",
  },
  MUSTER_UNSUPPORTED_SERVER: {
    retryable: false,
    http: 500,
    summary: 'the store server is older than muster supports, or its muster schema is newer than this muster',
  },
  MUSTER_NO_INSTANCE: {
    retryable: true,
    http: 503,
    summary: 'no live instance serves the service (or subscribes to the topic) right now',
  },
  MUSTER_REMOTE: {
    retryable: false,
    http: 502,
    summary: 'a remote handler failed; details.remote carries its code, message and details',
  },
  MUSTER_OVERLOADED: {
    retryable: true,
    http: 503,
    summary: "a bounded queue is full (the peer's send queue, held calls, or the server's in-flight limit)",
  },
  MUSTER_FRAME_TOO_LARGE: {
    retryable: false,
    http: 413,
    summary: 'a bus message is larger than the frame size limit',
  },
  MUSTER_PROTOCOL: {
    retryable: false,
    http: 400,
    summary: 'a peer sent bytes that are not the bus protocol; the connection was closed',
  },
  MUSTER_TLS_HANDSHAKE: {
    retryable: false,
    http: 502,
    summary:
      'the TLS handshake between bus peers failed: one uses TLS and the other not, or a certificate is not trusted',
  },
  MUSTER_PEER_LOST: {
    retryable: false,
    http: 502,
    summary: 'the connection to a bus peer closed or went silent while a call was in flight; it may have run',
  },
  MUSTER_UNKNOWN_METHOD: {
    retryable: false,
    http: 404,
    summary: 'the service does not have the method that was called',
  },
  MUSTER_INTERNAL: {
    retryable: false,
    http: 500,
    summary: 'a bug in muster: please report it with the message and logs',
  },
  MUSTER_NO_ROUTING_KEY: {
    retryable: false,
    http: 400,
    summary: 'the proxy found no valid routing key in the request and has no default key',
  },
  MUSTER_UPSTREAM_UNAVAILABLE: {
    // not retryable by muster: the request (a POST, a DELETE…) may not be safe to send twice
    retryable: false,
    http: 502,
    summary: "the proxy could not reach the key's destination and the request was not safe to hold",
  },
  MUSTER_HOLD_TIMEOUT: {
    retryable: true,
    http: 504,
    summary: 'a request held by the proxy found no reachable destination within holdTimeout',
  },
  MUSTER_HOLD_FULL: {
    retryable: true,
    http: 503,
    summary: 'the proxy holds as many requests as its caps allow; retry after Retry-After',
  },
} as const satisfies Record<string, { retryable: boolean; http: number; summary: string }>;

/** A stable muster error code. Capabilities register theirs in {@link ERROR_CODES}. */
export type ErrorCode = keyof typeof ERROR_CODES;

/** The HTTP status for a code that is not in {@link ERROR_CODES} (a bug or an older peer). */
export const UNKNOWN_CODE_HTTP_STATUS = 500;

/**
 * The HTTP status a daemon's admin API answers an error code with, read from {@link ERROR_CODES}
 * (400 bad input, 401/403 credentials, 404 missing, 409 conflicting state, 421 not the owner,
 * 503 retry later…). A code muster does not know maps to {@link UNKNOWN_CODE_HTTP_STATUS}.
 */
export function httpStatusOf(code: string): number {
  return Object.hasOwn(ERROR_CODES, code) ? ERROR_CODES[code as ErrorCode].http : UNKNOWN_CODE_HTTP_STATUS;
}

/** Context carried in readonly fields instead of only in the message. */
export interface ErrorDetails {
  readonly key?: string;
  readonly revision?: number;
  readonly compactRevision?: number;
  readonly lease?: string;
  readonly partition?: string;
  readonly [field: string]: unknown;
}

export interface MusterErrorOptions {
  cause?: unknown;
  /** Overrides the code's default retryable mark. */
  retryable?: boolean;
  details?: ErrorDetails;
}

/** The base of every error muster throws on purpose. */
export class MusterError extends Error {
  override readonly name = 'MusterError';
  /** Stable machine-readable code, e.g. `MUSTER_COMPACTED`. */
  readonly code: ErrorCode;
  /** Whether repeating the same operation later may succeed. */
  readonly retryable: boolean;
  /** Structured context: key, revision, lease, partition… */
  readonly details: ErrorDetails;

  constructor(code: ErrorCode, message: string, options: MusterErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.retryable = options.retryable ?? ERROR_CODES[code].retryable;
    this.details = Object.freeze({ ...options.details });
  }

  /** A plain object for logs and `--json` output. */
  toJSON(): { code: ErrorCode; message: string; retryable: boolean; details: ErrorDetails } {
    return { code: this.code, message: this.message, retryable: this.retryable, details: this.details };
  }
}

/** True when `err` is a MusterError, optionally with the given code. */
export function isMusterError(err: unknown, code?: ErrorCode): err is MusterError {
  return err instanceof MusterError && (code === undefined || err.code === code);
}

/** True when `err` is marked retryable. Retry loops read only this. */
export function isRetryable(err: unknown): boolean {
  return err instanceof MusterError && err.retryable;
}

/** Shorthand for the most common error: bad input, state unchanged. */
export function invalidArgument(message: string, details?: ErrorDetails): MusterError {
  return new MusterError('MUSTER_INVALID_ARGUMENT', message, details ? { details } : {});
}

/** The error thrown when an AbortSignal fires; carries the signal's reason as cause. */
export function abortedError(signal: AbortSignal): MusterError {
  return new MusterError('MUSTER_ABORTED', 'the operation was aborted', { cause: signal.reason });
}

/** Throws {@link abortedError} when `signal` has already fired. */
export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw abortedError(signal);
}
