/**
 * The header rules of a reverse proxy: hop-by-hop header fields removed both ways (RFC 9110 §7.6.1,
 * including the ones a `Connection` field lists), `X-Forwarded-For/-Proto/-Host` added, the request id
 * (`X-Request-Id`) set, W3C `traceparent` and everything else passed through as the client sent it.
 */
import type { IncomingMessage, OutgoingHttpHeaders } from 'node:http';

/** RFC 9110 §7.6.1 hop-by-hop headers, plus `expect` (the proxy answers `100 Continue` itself). */
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

function listed(value: string | string[] | undefined): Set<string> | undefined {
  if (value === undefined) return undefined;
  return new Set(
    String(value)
      .toLowerCase()
      .split(/\s*,\s*/),
  );
}

/** The request head sent upstream, and whether its body goes chunked. */
export interface UpstreamHead {
  readonly head: string;
  readonly chunked: boolean;
}

/**
 * The request head sent upstream (latin1): the client's request line and header fields (names as
 * sent, repeated fields as sent) minus hop-by-hop ones, plus `X-Forwarded-*` and the request id; a
 * body the client sent chunked goes chunked (re-framed), one with a Content-Length keeps it.
 * `host` is the backend's `host:port`, sent when the client sent no Host.
 */
export function upstreamHead(
  req: IncomingMessage,
  requestId: string,
  proto: string,
  host: string,
  withBody: boolean,
): UpstreamHead {
  const raw = req.rawHeaders;
  const extra = listed(req.headers.connection);
  let out = `${req.method ?? 'GET'} ${req.url ?? '/'} HTTP/1.1\r\n`;
  let xff: string | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i] as string;
    const lower = name.toLowerCase();
    if (HOP_BY_HOP.has(lower) || extra?.has(lower) === true || lower === 'x-request-id') continue;
    if (lower === 'x-forwarded-for') {
      xff = xff === undefined ? raw[i + 1] : `${xff}, ${raw[i + 1] as string}`;
      continue;
    }
    out += `${name}: ${raw[i + 1] as string}\r\n`;
  }
  const client = req.socket.remoteAddress ?? 'unknown';
  out += `x-forwarded-for: ${xff === undefined ? client : `${xff}, ${client}`}\r\nx-forwarded-proto: ${proto}\r\n`;
  const h = req.headers.host;
  if (h !== undefined) out += `x-forwarded-host: ${h}\r\n`;
  else out += `host: ${host}\r\n`;
  out += `x-request-id: ${requestId}\r\n`;
  const chunked = withBody && req.headers['transfer-encoding'] !== undefined;
  if (chunked) out += 'transfer-encoding: chunked\r\n';
  return { head: `${out}\r\n`, chunked };
}

/** The headers sent to the client: the backend's minus hop-by-hop ones. */
export function downstreamHeaders(headers: Record<string, string | string[]>): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  const extra = listed(headers['connection']);
  for (const name in headers) {
    if (HOP_BY_HOP.has(name) || extra?.has(name) === true) continue;
    out[name] = headers[name];
  }
  return out;
}
