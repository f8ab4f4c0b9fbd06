/**
 * What the upstream pool reports when an exchange fails. Not a `MusterError`: the proxy translates it
 * into its answer to the client at one place (server.ts), by {@link isUnavailable} and {@link isTimeout}.
 */
export type UpstreamErrorCode =
  | 'UPSTREAM_CONNECT_TIMEOUT'
  | 'UPSTREAM_HEADERS_TIMEOUT'
  | 'UPSTREAM_BODY_TIMEOUT'
  | 'UPSTREAM_CLOSED'
  | 'UPSTREAM_STALE'
  | 'UPSTREAM_BAD_RESPONSE'
  | 'UPSTREAM_POOL_CLOSED';

export class UpstreamError extends Error {
  readonly code: UpstreamErrorCode;
  constructor(code: UpstreamErrorCode, message: string) {
    super(message);
    this.name = 'UpstreamError';
    this.code = code;
  }
}

/** Codes meaning the backend was not there: nothing reached an application, a GET may be held. */
const UNAVAILABLE_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EPIPE',
  'UPSTREAM_CONNECT_TIMEOUT',
  'UPSTREAM_CLOSED',
  'UPSTREAM_POOL_CLOSED',
]);

/** True when an upstream error means "destination unavailable" (refused, or closed before answering). */
export function isUnavailable(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && UNAVAILABLE_CODES.has(code);
}

/** True when an upstream error is a timeout waiting for the backend. */
export function isTimeout(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === 'UPSTREAM_HEADERS_TIMEOUT' || code === 'UPSTREAM_BODY_TIMEOUT';
}
