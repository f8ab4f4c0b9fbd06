/**
 * The header rules of a reverse proxy: hop-by-hop header fields removed both ways (RFC 9110 §7.6.1,
 * including the ones a `Connection` field lists), `X-Forwarded-For/-Proto/-Host` added, the request id
 * (`X-Request-Id`) set, W3C `traceparent` and everything else passed through as the client sent it.
 */
import type { ClientRequest } from './request-parser.js';

/** RFC 9110 §7.6.1 hop-by-hop headers, plus `expect` (the proxy answers `100 Continue` itself). */
export const HOP_BY_HOP: ReadonlySet<string> = new Set([
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

/**
 * Fields a client's `Connection` field cannot make hop-by-hop: the body's framing and the Host. A
 * request listing `Connection: content-length` would otherwise go upstream without its length, and
 * the backend would read its body as a second request that no routing, no `X-Forwarded-For` and no
 * request id ever saw (request smuggling).
 */
const END_TO_END: ReadonlySet<string> = new Set(['content-length', 'host']);

let dateSecond = -1;
let dateField = '';

/**
 * `date: <IMF-fixdate>\r\n` for the current second (RFC 9110 §6.6.1: a server with a clock sends
 * Date on the answers it makes itself), formatted once a second.
 */
export function dateHeaderLine(now = Date.now()): string {
  const second = Math.floor(now / 1000);
  if (second !== dateSecond) {
    dateSecond = second;
    dateField = `date: ${new Date(second * 1000).toUTCString()}\r\n`;
  }
  return dateField;
}

/** The field names a `Connection` field lists (lower-cased). */
export function listed(value: string): Set<string> {
  return new Set(value.toLowerCase().split(/\s*,\s*/));
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
 * `host` is the backend's `host:port`, sent when the client sent no Host; `client` the client's
 * address.
 */
export function upstreamHead(
  req: ClientRequest,
  requestId: string,
  proto: string,
  host: string,
  client: string,
): UpstreamHead {
  const raw = req.rawHeaders;
  const names = req.names;
  const connection = req.headers['connection'];
  const extra = connection === undefined ? undefined : listed(connection);
  let out = `${req.method} ${req.url} HTTP/1.1\r\n`;
  let xff: string | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i] as string;
    const lower = names[i >> 1] as string;
    if (HOP_BY_HOP.has(lower) || lower === 'x-request-id') continue;
    if (extra?.has(lower) === true && !END_TO_END.has(lower)) continue;
    if (lower === 'x-forwarded-for') {
      xff = xff === undefined ? raw[i + 1] : `${xff}, ${raw[i + 1] as string}`;
      continue;
    }
    out += `${name}: ${raw[i + 1] as string}\r\n`;
  }
  out += `x-forwarded-for: ${xff === undefined ? client : `${xff}, ${client}`}\r\nx-forwarded-proto: ${proto}\r\n`;
  const h = req.headers['host'];
  if (h !== undefined) out += `x-forwarded-host: ${h}\r\n`;
  else out += `host: ${host}\r\n`;
  out += `x-request-id: ${requestId}\r\n`;
  const chunked = req.hasBody && req.chunked;
  if (chunked) out += 'transfer-encoding: chunked\r\n';
  return { head: `${out}\r\n`, chunked };
}
