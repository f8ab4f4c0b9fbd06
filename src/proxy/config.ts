/**
 * The proxy's configuration: read a YAML or JSON file with positions, validate it against
 * {@link PROXY_CONFIG_SCHEMA}, and resolve every default once. Every error names the file, the line,
 * the field and the reason.
 */
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { resolve as resolvePath, dirname } from 'node:path';
import { Ajv, type ErrorObject } from 'ajv';
import { isMap, isSeq, LineCounter, parseDocument, type Document, type Node as YamlNode } from 'yaml';
import { invalidArgument, isMusterError, MusterError } from '../errors.js';
import { toMillis } from '../util/duration.js';
import { PROXY_CONFIG_SCHEMA } from './config-schema.js';
import { parseKeySpec, type KeySpec } from './key.js';

/** 50 s: the seed's hold ("wait until earlier of 50 s or backend comes back"), under most clients' 60 s. */
export const DEFAULT_HOLD_TIMEOUT_MS = 50_000;
/** 100/s per backend: a restarted backend is not shock-loaded by everything held for it at once. */
export const DEFAULT_RELEASE_RATE = 100;
/** 10,000 held per destination: a whole shard's long-polls (Zulip's are ~1 per open tab). */
export const DEFAULT_MAX_HELD_PER_DESTINATION = 10_000;
/** 50,000 held in all: about 50,000 file descriptors and a few hundred MB; past it, shed load with 503. */
export const DEFAULT_MAX_HELD_TOTAL = 50_000;
/** 250 ms between connection attempts to a refusing backend: a restart is seen within a quarter second. */
export const DEFAULT_PROBE_INTERVAL_MS = 250;
/** 5 s Retry-After on 503: a hand-off takes milliseconds, a restart seconds. */
export const DEFAULT_RETRY_AFTER_SECONDS = 5;
/** 60 s drain on reload: longer than the hold timeout, so an old worker answers everything it holds. */
export const DEFAULT_DRAIN_TIMEOUT_MS = 60_000;
/** 5 s to connect upstream: loopback and LAN connect in microseconds; a black hole shows quickly. */
export const DEFAULT_CONNECT_TIMEOUT_MS = 5_000;
/** 10 min to the upstream's response headers: long-polls (Zulip's: 90 s) are held open for minutes. */
export const DEFAULT_UPSTREAM_HEADERS_TIMEOUT_MS = 600_000;
/** 10 min of upstream body silence before the response is cut: streaming responses may be quiet. */
export const DEFAULT_UPSTREAM_BODY_TIMEOUT_MS = 600_000;
/** 4 s upstream keep-alive: under Node's 5 s server default, so the proxy never reuses a closing socket. */
export const DEFAULT_UPSTREAM_KEEPALIVE_MS = 4_000;
/** 256 connections per backend: enough for a worker at saturation, bounded for the backend. */
export const DEFAULT_UPSTREAM_CONNECTIONS = 256;
/** 10 s for a client to send its headers (slowloris); Node's default is 60 s. */
export const DEFAULT_CLIENT_HEADERS_TIMEOUT_MS = 10_000;
/** 60 s for a client to send its whole request (slow uploads are cut). */
export const DEFAULT_CLIENT_REQUEST_TIMEOUT_MS = 60_000;
/** 5 s idle keep-alive (Node's default, advertised in `Keep-Alive: timeout=5`). */
export const DEFAULT_CLIENT_KEEPALIVE_MS = 5_000;
/** 11 min without socket activity (a slow reader): longer than the longest upstream wait. */
export const DEFAULT_CLIENT_IDLE_TIMEOUT_MS = 660_000;
/** 16 KiB of request headers (Node's default); past it, 431. */
export const DEFAULT_MAX_HEADER_SIZE = 16_384;

/** Line-protocol mode (newline-delimited JSON over TCP; see lines.ts). */
export interface LinesSettings {
  readonly listen: readonly string[];
  /** The JSON field path of the routing key, split on '.' (`params.0` is the first of `params`). */
  readonly keyPath: readonly string[];
  /** The first message's key routes the whole connection. */
  readonly sticky: boolean;
}

export interface HoldSettings {
  readonly timeoutMs: number;
  readonly releaseRate: number;
  readonly maxPerDestination: number;
  readonly maxTotal: number;
  readonly probeIntervalMs: number;
  readonly timeoutStatus: number;
  readonly timeoutBody: string | undefined;
  readonly retryAfterSeconds: number;
}

export interface UpstreamSettings {
  readonly connectTimeoutMs: number;
  readonly headersTimeoutMs: number;
  readonly bodyTimeoutMs: number;
  readonly keepAliveTimeoutMs: number;
  readonly connections: number;
}

export interface ClientSettings {
  readonly headersTimeoutMs: number;
  readonly requestTimeoutMs: number;
  readonly keepAliveTimeoutMs: number;
  readonly idleTimeoutMs: number;
  readonly maxHeaderSize: number;
}

/** A resolved configuration: every default applied. */
export interface ProxyConfig {
  /** Absolute path of the file it came from, or `'<inline>'`. */
  readonly file: string;
  readonly service: string;
  readonly store: string | undefined;
  readonly root: string | undefined;
  readonly listen: readonly string[];
  readonly key: KeySpec;
  readonly keySource: string;
  readonly defaultKey: string | undefined;
  readonly partitions: number | undefined;
  readonly workers: number;
  readonly drainTimeoutMs: number;
  readonly hold: HoldSettings;
  readonly upstream: UpstreamSettings;
  readonly client: ClientSettings;
  readonly admin: { readonly listen: string; readonly tokenFile: string | undefined } | false;
  readonly lines: LinesSettings | undefined;
}

/** The file's shape (after schema validation). */
type Raw = {
  service: string;
  store?: string;
  root?: string;
  listen: string | string[];
  key: string;
  defaultKey?: string;
  partitions?: number;
  workers?: number;
  drainTimeout?: number | string;
  hold?: Partial<Record<string, number | string>>;
  upstream?: Partial<Record<string, number | string>>;
  client?: Partial<Record<string, number | string>>;
  admin?: false | { listen?: string; tokenFile?: string };
  lines?: { listen: string | string[]; key: string; sticky?: boolean };
};

const ajv = new Ajv({ allErrors: true, strict: false });
const validate = ajv.compile(PROXY_CONFIG_SCHEMA);

/** Reads and resolves a configuration file; throws `MUSTER_INVALID_ARGUMENT` naming file, line and field. */
export function loadProxyConfig(file: string): ProxyConfig {
  const path = resolvePath(file);
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw invalidArgument(`${path}: cannot read the proxy configuration: ${(err as Error).message}`, {
      file: path,
    });
  }
  return parseProxyConfig(text, path);
}

/** Parses configuration text (YAML or JSON); `file` names it in errors and resolves relative paths. */
export function parseProxyConfig(text: string, file = '<inline>'): ProxyConfig {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  const syntax = doc.errors[0];
  if (syntax !== undefined) {
    const line = lineCounter.linePos(syntax.pos[0]).line;
    throw configError(file, line, '(syntax)', syntax.message.split('\n')[0] ?? 'invalid YAML');
  }
  const raw: unknown = doc.toJS();
  if (!validate(raw)) {
    const err = (validate.errors ?? []).slice().sort((a, b) => rank(a) - rank(b))[0] as ErrorObject;
    const path = err.instancePath.split('/').slice(1).map(unescapePointer);
    const field =
      err.keyword === 'required'
        ? [...path, String(err.params['missingProperty'])]
        : err.keyword === 'additionalProperties'
          ? [...path, String(err.params['additionalProperty'])]
          : path;
    const line = lineOf(doc, lineCounter, err.keyword === 'additionalProperties' ? field : path);
    throw configError(file, line, field.join('.') || '(top level)', reasonOf(err));
  }
  const r = raw as Raw;
  const at = (field: string[], fn: () => unknown): unknown => {
    try {
      return fn();
    } catch (err) {
      if (!isMusterError(err)) throw err;
      throw configError(file, lineOf(doc, lineCounter, field), field.join('.'), err.message);
    }
  };
  const ms = (field: string[], value: number | string | undefined, fallback: number): number =>
    value === undefined ? fallback : (at(field, () => toMillis(value, field.join('.'))) as number);
  const num = (value: number | string | undefined, fallback: number): number =>
    typeof value === 'number' ? value : fallback;
  const key = at(['key'], () => parseKeySpec(r.key)) as KeySpec;
  const h = r.hold ?? {};
  const u = r.upstream ?? {};
  const c = r.client ?? {};
  const base = file === '<inline>' ? process.cwd() : dirname(file);
  return {
    file,
    service: r.service,
    store: r.store,
    root: r.root,
    listen: typeof r.listen === 'string' ? [r.listen] : r.listen,
    key,
    keySource: r.key,
    defaultKey: r.defaultKey,
    partitions: r.partitions,
    workers: r.workers ?? availableParallelism(),
    drainTimeoutMs: ms(['drainTimeout'], r.drainTimeout, DEFAULT_DRAIN_TIMEOUT_MS),
    hold: {
      timeoutMs: ms(['hold', 'timeout'], h['timeout'], DEFAULT_HOLD_TIMEOUT_MS),
      releaseRate: num(h['releaseRate'], DEFAULT_RELEASE_RATE),
      maxPerDestination: num(h['maxPerDestination'], DEFAULT_MAX_HELD_PER_DESTINATION),
      maxTotal: num(h['maxTotal'], DEFAULT_MAX_HELD_TOTAL),
      probeIntervalMs: ms(['hold', 'probeInterval'], h['probeInterval'], DEFAULT_PROBE_INTERVAL_MS),
      timeoutStatus: num(h['timeoutStatus'], 504),
      timeoutBody: typeof h['timeoutBody'] === 'string' ? h['timeoutBody'] : undefined,
      retryAfterSeconds: num(h['retryAfterSeconds'], DEFAULT_RETRY_AFTER_SECONDS),
    },
    upstream: {
      connectTimeoutMs: ms(['upstream', 'connectTimeout'], u['connectTimeout'], DEFAULT_CONNECT_TIMEOUT_MS),
      headersTimeoutMs: ms(
        ['upstream', 'headersTimeout'],
        u['headersTimeout'],
        DEFAULT_UPSTREAM_HEADERS_TIMEOUT_MS,
      ),
      bodyTimeoutMs: ms(['upstream', 'bodyTimeout'], u['bodyTimeout'], DEFAULT_UPSTREAM_BODY_TIMEOUT_MS),
      keepAliveTimeoutMs: ms(
        ['upstream', 'keepAliveTimeout'],
        u['keepAliveTimeout'],
        DEFAULT_UPSTREAM_KEEPALIVE_MS,
      ),
      connections: num(u['connections'], DEFAULT_UPSTREAM_CONNECTIONS),
    },
    client: {
      headersTimeoutMs: ms(
        ['client', 'headersTimeout'],
        c['headersTimeout'],
        DEFAULT_CLIENT_HEADERS_TIMEOUT_MS,
      ),
      requestTimeoutMs: ms(
        ['client', 'requestTimeout'],
        c['requestTimeout'],
        DEFAULT_CLIENT_REQUEST_TIMEOUT_MS,
      ),
      keepAliveTimeoutMs: ms(
        ['client', 'keepAliveTimeout'],
        c['keepAliveTimeout'],
        DEFAULT_CLIENT_KEEPALIVE_MS,
      ),
      idleTimeoutMs: ms(['client', 'idleTimeout'], c['idleTimeout'], DEFAULT_CLIENT_IDLE_TIMEOUT_MS),
      maxHeaderSize: num(c['maxHeaderSize'], DEFAULT_MAX_HEADER_SIZE),
    },
    admin:
      r.admin === false
        ? false
        : {
            listen: r.admin?.listen ?? '127.0.0.1:0',
            tokenFile: r.admin?.tokenFile === undefined ? undefined : resolvePath(base, r.admin.tokenFile),
          },
    lines:
      r.lines === undefined
        ? undefined
        : {
            listen: typeof r.lines.listen === 'string' ? [r.lines.listen] : r.lines.listen,
            keyPath: r.lines.key.split('.'),
            sticky: r.lines.sticky ?? false,
          },
  };
}

/** Builds a configuration from an object (tests, the library); same validation as a file. */
export function proxyConfigFrom(value: Record<string, unknown>): ProxyConfig {
  return parseProxyConfig(JSON.stringify(value, null, 2));
}

function configError(file: string, line: number, field: string, reason: string): MusterError {
  return invalidArgument(`${file}:${line}: ${field}: ${reason}`, { file, line, field });
}

/** Prefer the error that says the most: a wrong enum/pattern over an `anyOf` summary. */
function rank(e: ErrorObject): number {
  if (e.keyword === 'anyOf') return 3;
  if (e.keyword === 'type' && e.schemaPath.includes('anyOf')) return 2;
  return e.keyword === 'required' || e.keyword === 'additionalProperties' ? 0 : 1;
}

function reasonOf(e: ErrorObject): string {
  switch (e.keyword) {
    case 'required':
      return 'is required';
    case 'additionalProperties':
      return 'is not a known field (check the spelling; docs/proxy.md lists the fields)';
    case 'pattern':
      return `has an invalid form (must match ${String(e.params['pattern'])})`;
    case 'anyOf':
      return 'has an invalid value (a duration is milliseconds or a string such as "50s")';
    default:
      return e.message ?? 'is invalid';
  }
}

function unescapePointer(s: string): string {
  return s.replace(/~1/g, '/').replace(/~0/g, '~');
}

/** The 1-based line of the node at `path` (the nearest existing ancestor when it is missing). */
function lineOf(doc: Document, lc: LineCounter, path: readonly string[]): number {
  for (let n = path.length; n >= 0; n--) {
    const sub = path.slice(0, n).map((p) => (/^\d+$/.test(p) ? Number(p) : p));
    const node = (n === 0 ? doc.contents : doc.getIn(sub, true)) as YamlNode | null | undefined;
    if (node === undefined || node === null) continue;
    // for a field, point at its key rather than its value when the parent is a map
    if (n > 0) {
      const parent = n === 1 ? doc.contents : doc.getIn(sub.slice(0, -1), true);
      if (isMap(parent)) {
        const pair = parent.items.find(
          (p) => String((p.key as { value?: unknown })?.value) === String(sub.at(-1)),
        );
        const keyNode = pair?.key as YamlNode | undefined;
        if (keyNode?.range) return lc.linePos(keyNode.range[0]).line;
      } else if (isSeq(parent) && node.range) {
        return lc.linePos(node.range[0]).line;
      }
    }
    if (node.range) return lc.linePos(node.range[0]).line;
  }
  return 1;
}
