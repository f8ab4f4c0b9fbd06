/**
 * The upstream side: one undici keep-alive pool per backend origin, and the header rules of a
 * reverse proxy (hop-by-hop headers removed, `X-Forwarded-*` added, `X-Request-Id` and W3C
 * `traceparent` passed through).
 */
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';
import { Pool } from 'undici';
import type { UpstreamSettings } from './config.js';

/** RFC 9110 §7.6.1 hop-by-hop headers, plus the ones undici sets itself. */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'expect',
]);

export class UpstreamPools {
  readonly #pools = new Map<string, Pool>();
  readonly #settings: UpstreamSettings;
  #closed = false;

  constructor(settings: UpstreamSettings) {
    this.#settings = settings;
  }

  get(origin: string): Pool {
    let pool = this.#pools.get(origin);
    if (pool === undefined) {
      const s = this.#settings;
      pool = new Pool(origin, {
        connections: s.connections,
        keepAliveTimeout: s.keepAliveTimeoutMs,
        keepAliveMaxTimeout: s.keepAliveTimeoutMs,
        headersTimeout: s.headersTimeoutMs,
        bodyTimeout: s.bodyTimeoutMs,
        connect: { timeout: s.connectTimeoutMs },
        pipelining: 1,
      });
      this.#pools.set(origin, pool);
    }
    return pool;
  }

  get origins(): string[] {
    return [...this.#pools.keys()];
  }

  /** Closes every pool after its requests finish (`force`: now). Idempotent. */
  async close(force = false): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const pools = [...this.#pools.values()];
    this.#pools.clear();
    await Promise.allSettled(pools.map((p) => (force ? p.destroy() : p.close())));
  }
}

/** The headers sent upstream: the client's minus hop-by-hop ones, plus X-Forwarded-* and the request id. */
export function upstreamHeaders(
  headers: IncomingHttpHeaders,
  remoteAddress: string | undefined,
  requestId: string,
  proto: string,
): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  const listed = headers.connection;
  const extra = listed === undefined ? undefined : new Set(listed.toLowerCase().split(/\s*,\s*/));
  for (const name in headers) {
    if (HOP_BY_HOP.has(name) || extra?.has(name) === true) continue;
    const v = headers[name];
    if (v !== undefined) out[name] = v;
  }
  const xff = headers['x-forwarded-for'];
  const client = remoteAddress ?? 'unknown';
  out['x-forwarded-for'] = xff === undefined ? client : `${String(xff)}, ${client}`;
  out['x-forwarded-proto'] = proto;
  if (headers.host !== undefined) out['x-forwarded-host'] = headers.host;
  out['x-request-id'] = requestId;
  return out;
}

/** The headers sent to the client: the backend's minus hop-by-hop ones. */
export function downstreamHeaders(
  headers: Record<string, string | string[] | undefined>,
): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  const listed = headers['connection'];
  const extra =
    listed === undefined
      ? undefined
      : new Set(
          String(listed)
            .toLowerCase()
            .split(/\s*,\s*/),
        );
  for (const name in headers) {
    if (HOP_BY_HOP.has(name) || extra?.has(name) === true) continue;
    out[name] = headers[name];
  }
  return out;
}

/** Error codes meaning the backend was not there: nothing reached an application, a GET may be held. */
const UNAVAILABLE_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EPIPE',
  'UND_ERR_SOCKET',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_CLOSED',
  'UND_ERR_DESTROYED',
]);

/** True when an upstream error means "destination unavailable" (refused, or closed before answering). */
export function isUnavailable(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && UNAVAILABLE_CODES.has(code);
}

/** True when an upstream error is a timeout waiting for the backend. */
export function isTimeout(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT';
}
