/**
 * The request-head parser of the raw client side (the next step of the raw data path, docs/proxy.md
 * "Not built yet"; not wired into server.ts yet): reads one HTTP/1.x request head off a connection's
 * bytes, strictly per RFC 9112 — anything a smuggling attack or a confused intermediary could read two
 * ways is refused, never repaired:
 *
 * - request line `method SP request-target SP HTTP/1.0|1.1` (§3), a token method, a target of visible
 *   ASCII; leading empty lines are skipped (§2.2); bare LF line ends are refused;
 * - field lines `token ":" OWS value OWS` (§5): no whitespace before the colon (§5.1), no obs-fold
 *   (§5.2), no control characters in values;
 * - `Content-Length` digits only, repeated only with the same value; `Transfer-Encoding` together with
 *   `Content-Length`, or with a final coding other than `chunked`, or in HTTP/1.0 (§6.1, §6.3);
 *   more than one `Host` (§3.2) — all 400;
 * - a head longer than `maxBytes` — 431.
 */

const CRLFCRLF = Buffer.from('\r\n\r\n');
const METHOD = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const TOKEN = METHOD;
/** Visible ASCII, no space: origin-form, absolute-form, authority-form and `*`. */
const TARGET = /^[\x21-\x7e]+$/;
/** A field value: visible ASCII, obs-text, SP and HTAB (§5.5); no CR, LF, NUL or other controls. */
const VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;

/** A parsed request head. Header names in `names` are lower-cased; `values` match them by index. */
export interface RequestHead {
  readonly method: string;
  readonly target: string;
  /** 0 for HTTP/1.0, 1 for HTTP/1.1. */
  readonly minor: 0 | 1;
  /** The field lines as sent: name (original case), value, name, value… (like node's `rawHeaders`). */
  readonly rawHeaders: string[];
  /** Lower-cased names, repeated fields joined with `, ` (`cookie` with `; `). */
  readonly headers: Record<string, string>;
  /** The body: `'chunked'`, or its length in bytes (0: none). */
  readonly body: 'chunked' | number;
  /** The connection may carry another request after this one. */
  readonly keepAlive: boolean;
  readonly expectContinue: boolean;
  /** `Connection: upgrade` with an `Upgrade` field. */
  readonly upgrade: boolean;
  /** Bytes of the head, its blank line included (the body starts there). */
  readonly size: number;
}

/** A refused head: the status to answer (then close) and why. */
export interface RefusedHead {
  readonly status: 400 | 431;
  readonly reason: string;
}

/**
 * Parses the request head at the start of `buf`: the head, a refusal, or undefined when more bytes
 * are needed (and `buf` is still within `maxBytes`).
 */
export function parseRequestHead(buf: Buffer, maxBytes: number): RequestHead | RefusedHead | undefined {
  let start = 0;
  while (buf[start] === 13 && buf[start + 1] === 10) start += 2; // §2.2: empty lines before a request
  const end = buf.indexOf(CRLFCRLF, start);
  if (end < 0) {
    if (buf.length - start > maxBytes) return refuse(431, 'the request head is too large');
    return undefined;
  }
  if (end + 4 - start > maxBytes) return refuse(431, 'the request head is too large');
  const text = buf.toString('latin1', start, end);
  if (text.includes('\n') && /[^\r]\n|^\n/.test(text)) return refuse(400, 'a line ends in a bare LF');
  const lines = text.split('\r\n');
  const line = lines[0] as string;
  const sp1 = line.indexOf(' ');
  const sp2 = line.indexOf(' ', sp1 + 1);
  if (sp1 <= 0 || sp2 < 0 || line.indexOf(' ', sp2 + 1) >= 0) return refuse(400, 'a malformed request line');
  const method = line.slice(0, sp1);
  const target = line.slice(sp1 + 1, sp2);
  const version = line.slice(sp2 + 1);
  if (!METHOD.test(method)) return refuse(400, 'an invalid method');
  if (!TARGET.test(target)) return refuse(400, 'an invalid request target');
  if (version !== 'HTTP/1.1' && version !== 'HTTP/1.0') return refuse(400, 'an unsupported HTTP version');
  const minor = version === 'HTTP/1.1' ? 1 : 0;

  const rawHeaders: string[] = [];
  const headers: Record<string, string> = {};
  let length = -1;
  let te: string | undefined;
  let hosts = 0;
  for (let i = 1; i < lines.length; i++) {
    const field = lines[i] as string;
    const c = field.charCodeAt(0);
    if (c === 32 || c === 9) return refuse(400, 'an obsolete line folding');
    const colon = field.indexOf(':');
    if (colon <= 0) return refuse(400, 'a field line without a name');
    const name = field.slice(0, colon);
    if (!TOKEN.test(name)) return refuse(400, 'an invalid field name (or whitespace before the colon)');
    const value = field.slice(colon + 1).replace(/^[ \t]+|[ \t]+$/g, '');
    if (!VALUE.test(value)) return refuse(400, 'a control character in a field value');
    const lower = name.toLowerCase();
    if (lower === 'content-length') {
      for (const part of value.split(',')) {
        const v = part.trim();
        if (!/^\d{1,15}$/.test(v)) return refuse(400, 'an invalid Content-Length');
        if (length !== -1 && length !== Number(v)) return refuse(400, 'two different Content-Lengths');
        length = Number(v);
      }
    } else if (lower === 'transfer-encoding') te = te === undefined ? value : `${te}, ${value}`;
    else if (lower === 'host') hosts++;
    rawHeaders.push(name, value);
    const had = headers[lower];
    headers[lower] = had === undefined ? value : `${had}${lower === 'cookie' ? '; ' : ', '}${value}`;
  }
  if (hosts > 1) return refuse(400, 'more than one Host');
  let body: 'chunked' | number = length === -1 ? 0 : length;
  if (te !== undefined) {
    if (length !== -1) return refuse(400, 'both Content-Length and Transfer-Encoding');
    if (minor === 0) return refuse(400, 'Transfer-Encoding in an HTTP/1.0 request');
    const codings = te.toLowerCase().split(/[ \t]*,[ \t]*/);
    if (codings[codings.length - 1] !== 'chunked' || codings.indexOf('chunked') !== codings.length - 1)
      return refuse(400, 'a Transfer-Encoding whose final coding is not chunked');
    body = 'chunked';
  }
  const connection = (headers['connection'] ?? '').toLowerCase().split(/[ \t]*,[ \t]*/);
  return {
    method,
    target,
    minor,
    rawHeaders,
    headers,
    body,
    keepAlive: minor === 1 ? !connection.includes('close') : connection.includes('keep-alive'),
    expectContinue: (headers['expect'] ?? '').toLowerCase() === '100-continue',
    upgrade: connection.includes('upgrade') && headers['upgrade'] !== undefined,
    size: end + 4,
  };
}

/** True for a refusal (a status to answer). */
export function isRefused(r: RequestHead | RefusedHead): r is RefusedHead {
  return 'status' in r;
}

function refuse(status: 400 | 431, reason: string): RefusedHead {
  return { status, reason };
}
