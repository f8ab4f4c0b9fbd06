/**
 * `agent.yaml`: read (YAML or JSON, with positions), validated against `AGENT_CONFIG_SCHEMA` (schema.ts),
 * then resolved once into an {@link AgentConfig} with every default filled in. Every error names the
 * file, the line, the field and the reason (`MUSTER_AGENT_CONFIG`).
 */
import { readFileSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { dirname, isAbsolute, join, resolve as resolvePath } from 'node:path';
import type { ErrorObject } from 'ajv';
import type { Document, LineCounter, Node } from 'yaml';
import { isMusterError, MusterError } from '../errors.js';
import { toMillis } from '../util/duration.js';
import { validate as validateAgentConfig } from './config-validator.js';
import { withYaml } from './yaml-once.js';

/** 3 s: the session default; a dead agent's partitions move in about 3 s. */
export const DEFAULT_AGENT_TTL_MS = 3000;
/**
 * A third of the TTL (1 s at 3 s): children are stopped when the session's validity deadline is this
 * close without a renewal. Renewals run every TTL/3, so a healthy session never comes closer than
 * ~2/3 TTL; 1/3 leaves the stop (grace capped to half of it, then SIGKILL) time to finish well before
 * the deadline.
 */
export const DEFAULT_STOP_MARGIN_FRACTION = 1 / 3;
/** 10 s, as systemd and Kubernetes: long enough to commit offsets, short enough to notice a hang. */
export const DEFAULT_STOP_GRACE_MS = 10_000;
/** 100 ms first back-off: a crash loop costs at most ten spawns in its first second. */
export const DEFAULT_BACKOFF_INITIAL_MS = 100;
/** 30 s cap: a broken child is retried twice a minute, not hammered. */
export const DEFAULT_BACKOFF_MAX_MS = 30_000;
/** 60 s of uptime resets the back-off: a child that ran a minute was not crash-looping. */
export const DEFAULT_BACKOFF_RESET_MS = 60_000;
/** 5 restarts in 60 s, then the partition goes to another host (supervisord's startretries is 3). */
export const DEFAULT_RESTART_BUDGET = { count: 5, windowMs: 60_000 } as const;
/** 10 MiB per log file, 3 rotated files kept: at most 40 MiB per child. */
export const DEFAULT_LOG_MAX_SIZE = 10 * 1024 * 1024;
export const DEFAULT_LOG_KEEP = 3;
/** 30 s for fd-3 or HTTP readiness; a child not ready by then is restarted. */
export const DEFAULT_READY_TIMEOUT_MS = 30_000;
/** 100 ms between HTTP readiness probes. */
export const DEFAULT_READY_INTERVAL_MS = 100;
/** The store when the file names none: the embedded server's default address. */
export const DEFAULT_AGENT_STORE = 'etcd://127.0.0.1:2379';

export type ReadyConfig =
  | { readonly kind: 'none' }
  | { readonly kind: 'fd'; readonly timeoutMs: number }
  | { readonly kind: 'http'; readonly url: string; readonly intervalMs: number; readonly timeoutMs: number };

export type RestartPolicy = 'always' | 'on-failure' | 'never';

/** What a check transition does: a built-in action or a command (`{check}`, `{partition}`, `{pid}` substituted). */
export type CheckActionConfig = 'restart' | 'release' | 'none' | { readonly exec: readonly string[] };

export interface CheckConfig {
  readonly name: string;
  readonly kind: 'script' | 'http' | 'ttl';
  /** argv (a shell line becomes `/bin/sh -c line`), URL, or undefined for TTL checks. */
  readonly script?: readonly string[];
  readonly http?: string;
  readonly ttlMs?: number;
  readonly intervalMs?: number;
  readonly timeoutMs?: number;
  readonly thresholds?: { passing?: number; warning?: number; failing?: number };
  readonly initialStatus?: 'passing' | 'warning' | 'failing';
  readonly onFailing: CheckActionConfig;
  readonly onWarning: CheckActionConfig;
  readonly onPassing: CheckActionConfig;
}

export interface RunConfig {
  /** argv; templates `{partition}`, `{port}`, `{service}`, `{instance}`, `{token}` are substituted per child. */
  readonly command: readonly string[];
  readonly cwd: string | undefined;
  readonly env: Readonly<Record<string, string>>;
  readonly ready: ReadyConfig;
  readonly stopSignal: NodeJS.Signals;
  readonly graceMs: number;
  readonly policy: RestartPolicy;
  readonly backoff: { readonly initialMs: number; readonly maxMs: number; readonly resetAfterMs: number };
  readonly budget: { readonly count: number; readonly windowMs: number };
  readonly logs: { readonly dir: string; readonly maxSize: number; readonly keep: number } | undefined;
}

/** A fully resolved agent configuration. */
export interface AgentConfig {
  readonly file: string;
  readonly store: string;
  readonly root: string | undefined;
  readonly service: string;
  readonly instance: {
    readonly id: string | undefined;
    readonly weight: number;
    readonly tags: readonly string[];
  };
  readonly ttlMs: number;
  readonly stopMarginMs: number;
  readonly partitions: number | readonly string[] | undefined;
  readonly maxConcurrentMoves: number | undefined;
  readonly run: RunConfig;
  readonly checks: readonly CheckConfig[];
  /** Per-partition environment added to `run.env` (e.g. a partition that needs more memory). */
  readonly overrides: Readonly<Record<string, { readonly env: Readonly<Record<string, string>> }>>;
  readonly config: readonly string[];
  readonly api: { readonly listen: string; readonly tokenFile: string };
  readonly relay: { readonly listen: string; readonly maxStalenessMs: number | undefined } | false;
  readonly stateDir: string;
  readonly logLevel: string | undefined;
  /** Serve the read-only dashboard (docs/ui.md) on the API address, at `/`. Default false. */
  readonly ui: boolean;
}

/** One problem in a file. */
export interface ConfigProblem {
  readonly file: string;
  readonly line: number;
  readonly column: number;
  /** Dotted path, e.g. `run.restart.budget`; `(root)` for the document. */
  readonly field: string;
  readonly reason: string;
}

function configError(problems: readonly ConfigProblem[]): MusterError {
  const lines = problems.map((p) => `${p.file}:${p.line}:${p.column}: ${p.field}: ${p.reason}`);
  return new MusterError('MUSTER_AGENT_CONFIG', `invalid agent configuration:\n  ${lines.join('\n  ')}`, {
    details: { problems, file: problems[0]?.file, line: problems[0]?.line, field: problems[0]?.field },
  });
}

/** The schema's validator as code generated at build time (scripts/gen-agent-validator.mjs), not compiled by ajv in every agent: ajv's compiler is ~0.3 MB of module source and its compiled code is another 0.1 MB (docs/agent.md, "Memory"). */
const validator = validateAgentConfig as ((value: unknown) => boolean) & { errors?: ErrorObject[] | null };
function validate(value: unknown): ErrorObject[] {
  return validator(value) ? [] : [...(validator.errors ?? [])];
}

function fieldOf(path: readonly (string | number)[]): string {
  if (path.length === 0) return '(root)';
  return path.map((p, i) => (typeof p === 'number' ? `[${p}]` : i === 0 ? p : `.${p}`)).join('');
}

/** Node at `path`, or the closest ancestor that exists. */
function nodeAt(doc: Document, path: readonly (string | number)[]): Node | undefined {
  for (let n = path.length; n >= 0; n--) {
    const node = doc.getIn(path.slice(0, n), true) as Node | undefined;
    if (node !== undefined && node !== null && typeof node === 'object' && 'range' in node) return node;
  }
  return doc.contents ?? undefined;
}

/** Keeps the most useful of ajv's errors: drops the anyOf/oneOf summaries when a branch said more. */
function reasonOf(e: ErrorObject): string {
  switch (e.keyword) {
    case 'additionalProperties':
      return `unknown field '${String((e.params as { additionalProperty: string }).additionalProperty)}'`;
    case 'required':
      return `missing required field '${String((e.params as { missingProperty: string }).missingProperty)}'`;
    case 'enum':
      return `must be one of ${(e.params as { allowedValues: unknown[] }).allowedValues.map((v) => JSON.stringify(v)).join(', ')}`;
    case 'oneOf':
      return 'must have exactly one of the alternatives (a check needs exactly one of script, http, ttl)';
    case 'not':
      return 'has fields that exclude each other (count and names)';
    default:
      return e.message ?? e.keyword;
  }
}

function problemsFromAjv(
  file: string,
  doc: Document,
  lines: LineCounter,
  errors: readonly ErrorObject[],
): ConfigProblem[] {
  const byPath = new Map<string, ErrorObject[]>();
  for (const e of errors) {
    const list = byPath.get(e.instancePath) ?? [];
    list.push(e);
    byPath.set(e.instancePath, list);
  }
  const out: ConfigProblem[] = [];
  for (const [instancePath, errs] of byPath) {
    // For anyOf failures ajv reports every branch; say what the field must be, once.
    const specific = errs.filter(
      (e) => e.keyword !== 'anyOf' && e.keyword !== 'type' && e.keyword !== 'pattern',
    );
    const hasAnyOf = errs.some((e) => e.keyword === 'anyOf');
    const chosen =
      hasAnyOf && specific.length === 0
        ? [errs.find((e) => e.keyword === 'anyOf')!]
        : specific.length > 0
          ? specific
          : errs;
    const path = instancePath
      .split('/')
      .slice(1)
      .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'))
      .map((s) => (/^\d+$/.test(s) ? Number(s) : s));
    const seen = new Set<string>();
    for (const e of chosen) {
      let reason = reasonOf(e);
      let fieldPath: (string | number)[] = path;
      if (e.keyword === 'additionalProperties') {
        fieldPath = [...path, (e.params as { additionalProperty: string }).additionalProperty];
      }
      if (e.keyword === 'anyOf') {
        const schema = e.parentSchema as { description?: string } | undefined;
        reason = schema?.description ? `must be ${schema.description}` : 'has the wrong type or form';
      }
      if (seen.has(reason)) continue;
      seen.add(reason);
      const node = nodeAt(doc, fieldPath);
      const pos = lines.linePos(node?.range?.[0] ?? 0);
      out.push({ file, line: pos.line, column: pos.col, field: fieldOf(fieldPath), reason });
    }
  }
  return out.sort((a, b) => a.line - b.line || a.column - b.column);
}

/** Turns `'10MiB'` into bytes. */
export function parseSize(value: number | string): number {
  if (typeof value === 'number') return value;
  const m = /^\s*(\d+(?:\.\d+)?)\s*(B|KB|KiB|MB|MiB|GB|GiB)?\s*$/.exec(value);
  if (!m) throw new Error(`'${value}' is not a size; use e.g. '512KiB', '10MiB'`);
  const unit =
    { B: 1, KB: 1e3, KiB: 1024, MB: 1e6, MiB: 1024 ** 2, GB: 1e9, GiB: 1024 ** 3 }[m[2] ?? 'B'] ?? 1;
  return Math.floor(Number(m[1]) * unit);
}

function argv(command: string | readonly string[]): string[] {
  return typeof command === 'string' ? ['/bin/sh', '-c', command] : [...command];
}

interface RawCheck {
  name: string;
  script?: string | string[];
  http?: string;
  ttl?: number | string;
  interval?: number | string;
  timeout?: number | string;
  thresholds?: { passing?: number; warning?: number; failing?: number };
  initialStatus?: 'passing' | 'warning' | 'failing';
  onFailing?: string | { exec: string | string[] };
  onWarning?: string | { exec: string | string[] };
  onPassing?: string | { exec: string | string[] };
}

/** The raw shape after schema validation (every field optional where the schema allows). */
interface RawConfig {
  store?: string;
  root?: string;
  service: string;
  instance?: { id?: string; weight?: number; tags?: string[] };
  session?: { ttl?: number | string; stopMargin?: number | string };
  partitions?: { count?: number; names?: string[]; maxConcurrentMoves?: number };
  run: {
    command: string | string[];
    cwd?: string;
    env?: Record<string, string | number | boolean>;
    ready?:
      | 'none'
      | { fd: 3; timeout?: number | string }
      | { http: string; interval?: number | string; timeout?: number | string };
    stop?: { signal?: string; grace?: number | string };
    restart?: {
      policy?: RestartPolicy;
      backoff?: { initial?: number | string; max?: number | string; resetAfter?: number | string };
      budget?: string;
    };
    logs?: { dir: string; maxSize?: number | string; keep?: number };
  };
  checks?: RawCheck[];
  overrides?: Record<string, { env?: Record<string, string | number | boolean> }>;
  config?: string[];
  api?: { listen?: string; tokenFile?: string };
  relay?: false | { listen?: string; maxStaleness?: number | string };
  stateDir?: string;
  log?: { level?: string };
  ui?: boolean;
}

function action(a: RawCheck['onFailing']): CheckActionConfig {
  if (a === undefined) return 'none';
  if (typeof a === 'string') return a as CheckActionConfig;
  return { exec: argv(a.exec) };
}

/** The default directory for the process registry, token and relay socket: private to the user. */
export function defaultStateDir(): string {
  const runtime = process.env.XDG_RUNTIME_DIR;
  return runtime ? join(runtime, 'muster') : join(tmpdir(), `muster-${userInfo().uid}`);
}

/**
 * Resolves a validated raw document. Semantic checks the schema cannot express (durations that must
 * be ordered, a known signal) are reported like schema errors, with positions.
 */
function resolveConfig(file: string, raw: RawConfig, doc: Document, lines: LineCounter): AgentConfig {
  const problems: ConfigProblem[] = [];
  const at = (path: (string | number)[], reason: string): void => {
    const node = nodeAt(doc, path);
    const pos = lines.linePos(node?.range?.[0] ?? 0);
    problems.push({ file, line: pos.line, column: pos.col, field: fieldOf(path), reason });
  };
  const ms = (value: number | string | undefined, fallback: number, path: (string | number)[]): number => {
    if (value === undefined) return fallback;
    try {
      return toMillis(value, fieldOf(path));
    } catch (err) {
      at(path, isMusterError(err) ? err.message : String(err));
      return fallback;
    }
  };
  const base = dirname(resolvePath(file));
  const abs = (p: string): string => (isAbsolute(p) ? p : resolvePath(base, p));

  const ttlMs = ms(raw.session?.ttl, DEFAULT_AGENT_TTL_MS, ['session', 'ttl']);
  if (ttlMs < 1000) at(['session', 'ttl'], `must be at least 1s, got ${ttlMs}ms`);
  const stopMarginMs = ms(raw.session?.stopMargin, Math.round(ttlMs * DEFAULT_STOP_MARGIN_FRACTION), [
    'session',
    'stopMargin',
  ]);
  if (stopMarginMs >= ttlMs * (2 / 3)) {
    at(
      ['session', 'stopMargin'],
      `must be less than two thirds of the ttl (renewals come every ttl/3), got ${stopMarginMs}ms`,
    );
  }

  const r = raw.run;
  const signalName = r.stop?.signal ?? 'SIGTERM';
  if (!isSignal(signalName)) at(['run', 'stop', 'signal'], `unknown signal '${signalName}'`);
  let ready: ReadyConfig = { kind: 'none' };
  if (typeof r.ready === 'object' && 'fd' in r.ready) {
    ready = {
      kind: 'fd',
      timeoutMs: ms(r.ready.timeout, DEFAULT_READY_TIMEOUT_MS, ['run', 'ready', 'timeout']),
    };
  } else if (typeof r.ready === 'object' && 'http' in r.ready) {
    ready = {
      kind: 'http',
      url: r.ready.http,
      intervalMs: ms(r.ready.interval, DEFAULT_READY_INTERVAL_MS, ['run', 'ready', 'interval']),
      timeoutMs: ms(r.ready.timeout, DEFAULT_READY_TIMEOUT_MS, ['run', 'ready', 'timeout']),
    };
  }
  const backoff = {
    initialMs: ms(r.restart?.backoff?.initial, DEFAULT_BACKOFF_INITIAL_MS, [
      'run',
      'restart',
      'backoff',
      'initial',
    ]),
    maxMs: ms(r.restart?.backoff?.max, DEFAULT_BACKOFF_MAX_MS, ['run', 'restart', 'backoff', 'max']),
    resetAfterMs: ms(r.restart?.backoff?.resetAfter, DEFAULT_BACKOFF_RESET_MS, [
      'run',
      'restart',
      'backoff',
      'resetAfter',
    ]),
  };
  if (backoff.maxMs < backoff.initialMs) {
    at(['run', 'restart', 'backoff', 'max'], `must not be below initial (${backoff.initialMs}ms)`);
  }
  let budget: { count: number; windowMs: number } = DEFAULT_RESTART_BUDGET;
  if (r.restart?.budget !== undefined) {
    const m = /^\s*(\d+)\s+in\s+(\S+)\s*$/.exec(r.restart.budget);
    if (m) budget = { count: Number(m[1]), windowMs: ms(m[2], 60_000, ['run', 'restart', 'budget']) };
  }
  let logs: RunConfig['logs'];
  if (r.logs !== undefined) {
    let maxSize = DEFAULT_LOG_MAX_SIZE;
    try {
      maxSize = parseSize(r.logs.maxSize ?? DEFAULT_LOG_MAX_SIZE);
    } catch (err) {
      at(['run', 'logs', 'maxSize'], (err as Error).message);
    }
    logs = { dir: abs(r.logs.dir), maxSize, keep: r.logs.keep ?? DEFAULT_LOG_KEEP };
  }
  const names = new Set<string>();
  const checks: CheckConfig[] = (raw.checks ?? []).map((c, i) => {
    if (names.has(c.name)) at(['checks', i, 'name'], `duplicate check name '${c.name}'`);
    names.add(c.name);
    const kind = c.script !== undefined ? 'script' : c.http !== undefined ? 'http' : 'ttl';
    if (kind === 'ttl' && (c.interval !== undefined || c.timeout !== undefined)) {
      at(['checks', i], 'a ttl check takes no interval or timeout (the child reports through the API)');
    }
    return {
      name: c.name,
      kind,
      ...(c.script !== undefined ? { script: argv(c.script) } : {}),
      ...(c.http !== undefined ? { http: c.http } : {}),
      ...(c.ttl !== undefined ? { ttlMs: ms(c.ttl, 0, ['checks', i, 'ttl']) } : {}),
      ...(c.interval !== undefined ? { intervalMs: ms(c.interval, 0, ['checks', i, 'interval']) } : {}),
      ...(c.timeout !== undefined ? { timeoutMs: ms(c.timeout, 0, ['checks', i, 'timeout']) } : {}),
      ...(c.thresholds ? { thresholds: c.thresholds } : {}),
      ...(c.initialStatus ? { initialStatus: c.initialStatus } : {}),
      onFailing: action(c.onFailing),
      onWarning: action(c.onWarning),
      onPassing: action(c.onPassing),
    };
  });
  const stateDir = abs(raw.stateDir ?? defaultStateDir());
  const relay: AgentConfig['relay'] =
    raw.relay === false
      ? false
      : {
          listen: raw.relay?.listen !== undefined ? abs(raw.relay.listen) : join(stateDir, 'relay.sock'),
          maxStalenessMs:
            raw.relay?.maxStaleness === undefined
              ? undefined
              : ms(raw.relay.maxStaleness, 0, ['relay', 'maxStaleness']),
        };
  if (problems.length > 0) throw configError(problems);
  return {
    file,
    store: raw.store ?? DEFAULT_AGENT_STORE,
    root: raw.root,
    service: raw.service,
    instance: {
      id: raw.instance?.id === 'auto' ? undefined : raw.instance?.id,
      weight: raw.instance?.weight ?? 1,
      tags: raw.instance?.tags ?? [],
    },
    ttlMs,
    stopMarginMs,
    partitions: raw.partitions?.names ?? raw.partitions?.count,
    maxConcurrentMoves: raw.partitions?.maxConcurrentMoves,
    run: {
      command: argv(r.command),
      cwd: r.cwd === undefined ? undefined : abs(r.cwd),
      env: Object.fromEntries(Object.entries(r.env ?? {}).map(([k, v]) => [k, String(v)])),
      ready,
      stopSignal: signalName as NodeJS.Signals,
      graceMs: ms(r.stop?.grace, DEFAULT_STOP_GRACE_MS, ['run', 'stop', 'grace']),
      policy: r.restart?.policy ?? 'on-failure',
      backoff,
      budget,
      logs,
    },
    checks,
    overrides: Object.fromEntries(
      Object.entries(raw.overrides ?? {}).map(([p, o]) => [
        p,
        { env: Object.fromEntries(Object.entries(o.env ?? {}).map(([k, v]) => [k, String(v)])) },
      ]),
    ),
    config: raw.config ?? [],
    api: {
      listen: raw.api?.listen ?? '127.0.0.1:0',
      tokenFile: abs(raw.api?.tokenFile ?? join(stateDir, `${raw.service}.token`)),
    },
    relay,
    stateDir,
    logLevel: raw.log?.level,
    ui: raw.ui ?? false,
  };
}

const SIGNALS = new Set([
  'SIGTERM',
  'SIGINT',
  'SIGQUIT',
  'SIGHUP',
  'SIGUSR1',
  'SIGUSR2',
  'SIGKILL',
  'SIGABRT',
  'SIGWINCH',
  'SIGPWR',
]);
function isSignal(name: string): boolean {
  return SIGNALS.has(name);
}

/**
 * Parses and validates an agent file's text. Throws `MUSTER_AGENT_CONFIG` listing every problem as
 * `file:line:column: field: reason`.
 */
export function parseAgentConfig(text: string, file: string): AgentConfig {
  // The parser is loaded for this parse only (yaml-once.ts): nothing returned refers to it.
  return withYaml((yaml) => {
    const lines = new yaml.LineCounter();
    const doc = yaml.parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true });
    return checkAgentConfig(file, doc, lines);
  });
}

function checkAgentConfig(file: string, doc: Document, lines: LineCounter): AgentConfig {
  if (doc.errors.length > 0) {
    throw configError(
      doc.errors.map((e) => {
        const pos = lines.linePos(e.pos[0]);
        return {
          file,
          line: pos.line,
          column: pos.col,
          field: '(syntax)',
          reason: e.message.split('\n')[0] ?? e.code,
        };
      }),
    );
  }
  const value: unknown = doc.toJS();
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw configError([{ file, line: 1, column: 1, field: '(root)', reason: 'must be a mapping of fields' }]);
  }
  const errors = validate(value);
  if (errors.length > 0) throw configError(problemsFromAjv(file, doc, lines, errors));
  return resolveConfig(file, value as RawConfig, doc, lines);
}

/** Reads, parses and validates `file`. Throws `MUSTER_AGENT_CONFIG` (also when it cannot be read). */
export function loadAgentConfig(file: string): AgentConfig {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw configError([
      { file, line: 0, column: 0, field: '(file)', reason: `cannot be read: ${(err as Error).message}` },
    ]);
  }
  return parseAgentConfig(text, file);
}
