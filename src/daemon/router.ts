/** The admin API's routes: a method and a path of literal and `:param` segments. */
import { invalidArgument, MusterError } from '../errors.js';
import type { AdminHandler } from './admin.js';

interface Route {
  readonly method: string;
  readonly pattern: string;
  readonly segments: readonly string[];
  readonly handler: AdminHandler;
  /** Served without the bearer token (only `/healthz`). */
  readonly open: boolean;
}

/** What a request path matched. */
export type RouteMatch =
  | { readonly kind: 'route'; readonly route: Route; readonly params: Readonly<Record<string, string>> }
  | { readonly kind: 'method'; readonly allow: readonly string[] }
  | { readonly kind: 'none' };

const METHOD = /^[A-Z]+$/;
const SEGMENT = /^(?::[A-Za-z_][A-Za-z0-9_]*|[A-Za-z0-9._~-]+)$/;

export class Router {
  readonly #routes: Route[] = [];

  /** Adds a route; throws `MUSTER_INVALID_ARGUMENT` for a malformed or duplicate one. */
  add(method: string, pattern: string, handler: AdminHandler, open = false): void {
    if (!METHOD.test(method)) throw invalidArgument(`an HTTP method is upper-case letters, got '${method}'`);
    const segments = pattern === '/' ? [] : pattern.split('/').slice(1);
    if (!pattern.startsWith('/') || segments.some((s) => !SEGMENT.test(s))) {
      throw invalidArgument(
        `an admin route is '/' and segments of letters, digits, '._~-' or ':name', got '${pattern}'`,
      );
    }
    const names = segments.filter((s) => s.startsWith(':'));
    if (new Set(names).size !== names.length) {
      throw invalidArgument(`admin route '${pattern}' names a parameter twice`);
    }
    const shape = (s: readonly string[]): string => s.map((x) => (x.startsWith(':') ? ':' : x)).join('/');
    if (this.#routes.some((r) => r.method === method && shape(r.segments) === shape(segments))) {
      throw invalidArgument(`admin route ${method} ${pattern} is already registered`);
    }
    this.#routes.push({ method, pattern, segments, handler, open });
  }

  /**
   * Finds the route for `method` and `path` (literal segments win over parameters, then the first
   * registered). Throws `MUSTER_INVALID_ARGUMENT` for a path that is not valid percent-encoding.
   */
  match(method: string, path: string): RouteMatch {
    const parts = path === '/' ? [] : path.split('/').slice(1);
    let best: { route: Route; params: Record<string, string>; literals: number } | undefined;
    const allow = new Set<string>();
    for (const route of this.#routes) {
      if (route.segments.length !== parts.length) continue;
      const params: Record<string, string> = {};
      let literals = 0;
      let ok = true;
      for (let i = 0; i < parts.length && ok; i++) {
        const seg = route.segments[i] as string;
        const part = parts[i] as string;
        if (seg.startsWith(':')) {
          if (part === '') ok = false;
          else params[seg.slice(1)] = decode(part);
        } else if (seg === part) literals++;
        else ok = false;
      }
      if (!ok) continue;
      allow.add(route.method);
      if (route.method !== method) continue;
      if (best === undefined || literals > best.literals) best = { route, params, literals };
    }
    if (best !== undefined) return { kind: 'route', route: best.route, params: best.params };
    if (allow.size > 0) return { kind: 'method', allow: [...allow].sort() };
    return { kind: 'none' };
  }

  /** Every route as `METHOD /pattern`, for the 404 message. */
  list(): string[] {
    return this.#routes.map((r) => `${r.method} ${r.pattern}`);
  }
}

function decode(part: string): string {
  try {
    return decodeURIComponent(part);
  } catch (err) {
    throw new MusterError(
      'MUSTER_INVALID_ARGUMENT',
      `the path segment '${part}' is not valid percent-encoding`,
      {
        cause: err,
      },
    );
  }
}
