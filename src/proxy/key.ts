/**
 * Routing keys: where in a request the key is found (`host`, `header:X`, `query:p`,
 * `path:/realms/:realm`, `cookie:c`), and which keys are acceptable.
 */
import type { IncomingHttpHeaders } from 'node:http';
import { invalidArgument } from '../errors.js';

/** Where the key comes from. */
export type KeySpec =
  | { readonly kind: 'host' }
  | { readonly kind: 'header'; readonly name: string }
  | { readonly kind: 'query'; readonly name: string }
  | { readonly kind: 'cookie'; readonly name: string }
  | { readonly kind: 'path'; readonly segments: readonly PathSegment[]; readonly param: string };

type PathSegment = { readonly literal: string } | { readonly param: string };

/** 128 characters, no `/`, whitespace or control characters: a key must be a store key segment. */
const VALID_KEY = /^[^/\s\p{Cc}]{1,128}$/u;

/**
 * True when `key` can be a routing key (and hence a `routes/<key>` segment). Runs on every request:
 * a printable-ASCII key (the usual one) is checked by character, anything else by {@link VALID_KEY}.
 */
export function isValidKey(key: string): boolean {
  const n = key.length;
  if (n === 0 || n > 128) return n > 128 && VALID_KEY.test(key); // (128 code points may be 256 units)
  for (let i = 0; i < n; i++) {
    const c = key.charCodeAt(i);
    // space and controls below it, '/', DEL and all non-ASCII: the regex decides
    if (c <= 0x20 || c === 0x2f || c >= 0x7f) return VALID_KEY.test(key);
  }
  return true;
}

/** Parses `host`, `header:X`, `query:p`, `cookie:c` or `path:/a/:param/…`; throws `MUSTER_INVALID_ARGUMENT`. */
export function parseKeySpec(text: string): KeySpec {
  if (text === 'host') return { kind: 'host' };
  const i = text.indexOf(':');
  const kind = i < 0 ? text : text.slice(0, i);
  const arg = i < 0 ? '' : text.slice(i + 1);
  if ((kind === 'header' || kind === 'query' || kind === 'cookie') && arg.length > 0) {
    return { kind, name: kind === 'header' ? arg.toLowerCase() : arg };
  }
  if (kind === 'path' && arg.startsWith('/')) {
    const segments: PathSegment[] = arg
      .split('/')
      .slice(1)
      .map((s) => (s.startsWith(':') ? { param: s.slice(1) } : { literal: s }));
    const params = segments.filter((s): s is { param: string } => 'param' in s);
    if (params.length !== 1 || params[0]?.param === '') {
      throw invalidArgument(
        `the path pattern ${JSON.stringify(arg)} must contain exactly one :param segment`,
      );
    }
    return { kind: 'path', segments, param: params[0]?.param as string };
  }
  throw invalidArgument(
    `unknown key extractor ${JSON.stringify(text)}; use host, header:NAME, query:NAME, cookie:NAME or path:/prefix/:param`,
  );
}

/** The raw key of a request, or `undefined` when the request has none. Cheap: runs on every request. */
export function extractKey(spec: KeySpec, url: string, headers: IncomingHttpHeaders): string | undefined {
  switch (spec.kind) {
    case 'host': {
      const host = headers.host;
      if (host === undefined || host === '') return undefined;
      const colon = host.startsWith('[') ? host.indexOf(']:') + 1 : host.lastIndexOf(':');
      return (colon > 0 ? host.slice(0, colon) : host).toLowerCase();
    }
    case 'header': {
      const v = headers[spec.name];
      const s = Array.isArray(v) ? v[0] : v;
      return s === undefined || s === '' ? undefined : s;
    }
    case 'query': {
      const q = url.indexOf('?');
      if (q < 0) return undefined;
      const v = new URLSearchParams(url.slice(q + 1)).get(spec.name);
      return v === null || v === '' ? undefined : v;
    }
    case 'cookie': {
      const c = headers.cookie;
      if (c === undefined) return undefined;
      for (const part of c.split(';')) {
        const eq = part.indexOf('=');
        if (eq < 0) continue;
        if (part.slice(0, eq).trim() === spec.name) {
          const v = part.slice(eq + 1).trim();
          try {
            return v === '' ? undefined : decodeURIComponent(v);
          } catch {
            return v;
          }
        }
      }
      return undefined;
    }
    case 'path': {
      const end = url.search(/[?#]/);
      const parts = (end < 0 ? url : url.slice(0, end)).split('/');
      if (parts[0] !== '' || parts.length - 1 < spec.segments.length) return undefined;
      let found: string | undefined;
      for (let i = 0; i < spec.segments.length; i++) {
        const seg = spec.segments[i] as PathSegment;
        const got = parts[i + 1] as string;
        if ('literal' in seg) {
          if (got !== seg.literal) return undefined;
        } else {
          try {
            found = decodeURIComponent(got);
          } catch {
            return undefined;
          }
        }
      }
      return found === '' ? undefined : found;
    }
  }
}
