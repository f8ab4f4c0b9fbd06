/**
 * The data model of scheduled configuration: versions, the stored policy, key layout and the codecs
 * between them and the store. Shared by the process side (handle) and the publisher side.
 */
import { createRequire } from 'node:module';
import type { Ajv, ValidateFunction } from 'ajv';
import { invalidArgument, MusterError } from '../errors.js';
import { bytesOf, jsonBytes, textOf } from '../store/index.js';
import { type Duration, formatDuration, toMillis } from '../util/duration.js';

/** The root every muster key lives under (brief §1); the same value as membership's `DEFAULT_ROOT`. */
export const DEFAULT_CONFIG_ROOT = '/muster/';
/** @deprecated Use `DEFAULT_ROOT` (the option is `root` everywhere). Kept for callers of 0.1. */
export const DEFAULT_ROOT_PREFIX = DEFAULT_CONFIG_ROOT;

/**
 * The key root from options that may still use the deprecated `rootPrefix` spelling: `root` wins,
 * then `rootPrefix`, then {@link DEFAULT_CONFIG_ROOT}.
 */
export function configRoot(options: { readonly root?: string; readonly rootPrefix?: string }): string {
  return options.root ?? options.rootPrefix ?? DEFAULT_CONFIG_ROOT;
}
/** How old a proof of freshness may be before tasks are refused: 2 s, the brief's default. */
export const DEFAULT_MAX_STALENESS_MS = 2000;
/** The clock error assumed between any two machines: 250 ms, generous for NTP on a LAN. */
export const DEFAULT_MAX_CLOCK_SKEW_MS = 250;
/** Commit slack added above `maxStaleness + 2·maxClockSkew` for the default lead time: 500 ms. */
export const DEFAULT_LEAD_SLACK_MS = 500;
/** Past versions kept in the store per configuration (older ones are deleted when publishing). */
export const DEFAULT_KEEP_VERSIONS = 100;

/** One immutable version of a configuration. */
export interface ConfigVersion<T = unknown> {
  /** 1, 2, 3…: one more per publication. */
  readonly version: number;
  /** Wall-clock instant (ms since the epoch) from which this version is in force. */
  readonly activateAt: number;
  readonly value: T;
  /** Publisher's wall clock when it published. */
  readonly createdAt: number;
  readonly author?: string | undefined;
  readonly note?: string | undefined;
  /** Set when the version was cancelled (publisher's wall clock); a cancelled version is never in force. */
  readonly cancelledAt?: number | undefined;
}

/** The stored policy of a configuration; every process and publisher uses the same bounds. */
export interface ConfigPolicy {
  readonly maxStalenessMs: number;
  readonly maxClockSkewMs: number;
  /** Always greater than `maxStalenessMs + 2·maxClockSkewMs`. */
  readonly minLeadTimeMs: number;
  /** JSON Schema every value must satisfy; `undefined`: any JSON value. */
  readonly schema?: unknown;
  /** How many past versions to keep in the store. */
  readonly keepVersions: number;
  readonly createdAt: number;
}

/** Options for creating a policy; every field optional. */
export interface ConfigPolicyOptions {
  /** Default {@link DEFAULT_MAX_STALENESS_MS}. */
  maxStaleness?: Duration;
  /** Default {@link DEFAULT_MAX_CLOCK_SKEW_MS}. */
  maxClockSkew?: Duration;
  /** Default `maxStaleness + 2·maxClockSkew + 500 ms`; must be greater than `maxStaleness + 2·maxClockSkew`. */
  minLeadTime?: Duration;
  /** A JSON Schema (draft 2020-12 or 07) for values. Default: none. */
  schema?: unknown;
  /** Default {@link DEFAULT_KEEP_VERSIONS}. */
  keepVersions?: number;
}

/** The policy used before a configuration's stored policy has been read (or when it has none). */
export const DEFAULT_POLICY: ConfigPolicy = resolvePolicy({}, 0);

/** Resolves and validates policy options; throws `MUSTER_INVALID_ARGUMENT` or `MUSTER_SCHEMA_VIOLATION`. */
export function resolvePolicy(options: ConfigPolicyOptions, now: number): ConfigPolicy {
  const maxStalenessMs = toMillis(options.maxStaleness ?? DEFAULT_MAX_STALENESS_MS, 'maxStaleness');
  const maxClockSkewMs = toMillis(options.maxClockSkew ?? DEFAULT_MAX_CLOCK_SKEW_MS, 'maxClockSkew');
  if (maxStalenessMs < 10) throw invalidArgument(`maxStaleness must be at least 10ms, got ${maxStalenessMs}`);
  const floor = maxStalenessMs + 2 * maxClockSkewMs;
  const minLeadTimeMs =
    options.minLeadTime === undefined
      ? floor + DEFAULT_LEAD_SLACK_MS
      : toMillis(options.minLeadTime, 'minLeadTime');
  if (minLeadTimeMs <= floor) {
    throw invalidArgument(
      `minLeadTime must be greater than maxStaleness + 2·maxClockSkew = ${formatDuration(floor)}, got ${formatDuration(minLeadTimeMs)}`,
    );
  }
  const keepVersions = options.keepVersions ?? DEFAULT_KEEP_VERSIONS;
  if (!Number.isInteger(keepVersions) || keepVersions < 1) {
    throw invalidArgument(`keepVersions must be a positive integer, got ${String(keepVersions)}`);
  }
  if (options.schema !== undefined) compileSchema(options.schema);
  return {
    maxStalenessMs,
    maxClockSkewMs,
    minLeadTimeMs,
    ...(options.schema === undefined ? {} : { schema: options.schema }),
    keepVersions,
    createdAt: now,
  };
}

/** Checks a configuration name: letters, digits, `.`, `_`, `-`; 1–128 characters. */
export function checkConfigName(name: unknown): asserts name is string {
  if (typeof name !== 'string' || !/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(name)) {
    throw invalidArgument(
      `configuration name must be 1–128 letters, digits, '.', '_' or '-' (not starting with a symbol), got ${JSON.stringify(name)}`,
    );
  }
}

/** Where a configuration's keys live. */
export class ConfigKeys {
  readonly prefix: string;
  readonly policy: string;
  readonly versions: string;
  constructor(name: string, root = DEFAULT_CONFIG_ROOT) {
    checkConfigName(name);
    this.prefix = `${root}config/${name}/`;
    this.policy = `${this.prefix}policy`;
    this.versions = `${this.prefix}versions/`;
  }
  /** Zero-padded so that keys sort in version order. */
  version(version: number): string {
    return `${this.versions}${String(version).padStart(10, '0')}`;
  }
}

/**
 * ajv, loaded on the first schema to compile: most processes that load this module (every agent,
 * through the config relay) never compile one, and ajv's compiler is ~0.3 MB of module source
 * (docs/agent.md, "Memory"). ajv is CommonJS, so `require` loads it synchronously.
 */
let ajv: Ajv | undefined;
function theAjv(): Ajv {
  if (ajv === undefined) {
    const { Ajv: AjvClass } = createRequire(import.meta.url)('ajv') as typeof import('ajv');
    ajv = new AjvClass({ allErrors: true, strict: false });
  }
  return ajv;
}
const compiled = new Map<string, ValidateFunction>();

/** Compiles a JSON Schema (cached by its text); throws `MUSTER_SCHEMA_VIOLATION` if it is invalid. */
export function compileSchema(schema: unknown): ValidateFunction {
  const text = JSON.stringify(schema);
  const hit = compiled.get(text);
  if (hit !== undefined) return hit;
  let fn: ValidateFunction;
  try {
    fn = theAjv().compile(schema as object);
  } catch (err) {
    throw new MusterError(
      'MUSTER_SCHEMA_VIOLATION',
      `the JSON Schema is invalid: ${(err as Error).message}`,
      {
        cause: err,
      },
    );
  }
  compiled.set(text, fn);
  return fn;
}

/** Throws `MUSTER_SCHEMA_VIOLATION` listing the first violations when `value` fails `schema`. */
export function validateValue(schema: unknown, value: unknown, what = 'value'): void {
  if (value === undefined) throw new MusterError('MUSTER_SCHEMA_VIOLATION', `${what} is not a JSON value`);
  if (schema === undefined) return;
  const fn = compileSchema(schema);
  if (fn(value)) return;
  const problems = (fn.errors ?? [])
    .slice(0, 5)
    .map((e) => `${e.instancePath || '(root)'} ${e.message ?? 'is invalid'}`)
    .join('; ');
  throw new MusterError('MUSTER_SCHEMA_VIOLATION', `${what} does not match the schema: ${problems}`, {
    details: { violations: fn.errors?.slice(0, 5) },
  });
}

/** Encodes a policy for the store. */
export function encodePolicy(policy: ConfigPolicy): Uint8Array {
  return jsonBytes(policy);
}

/** Decodes a stored policy; throws `MUSTER_CORRUPT_DATA` when it is not one. */
export function decodePolicy(bytes: Uint8Array, key: string): ConfigPolicy {
  let raw: Partial<ConfigPolicy>;
  try {
    raw = JSON.parse(textOf(bytes)) as Partial<ConfigPolicy>;
    return resolvePolicy(
      {
        maxStaleness: raw.maxStalenessMs ?? DEFAULT_MAX_STALENESS_MS,
        maxClockSkew: raw.maxClockSkewMs ?? DEFAULT_MAX_CLOCK_SKEW_MS,
        ...(raw.minLeadTimeMs === undefined ? {} : { minLeadTime: raw.minLeadTimeMs }),
        ...(raw.schema === undefined ? {} : { schema: raw.schema }),
        keepVersions: raw.keepVersions ?? DEFAULT_KEEP_VERSIONS,
      },
      raw.createdAt ?? 0,
    );
  } catch (err) {
    throw new MusterError('MUSTER_CORRUPT_DATA', `the configuration policy at '${key}' is not valid`, {
      cause: err,
      details: { key },
    });
  }
}

/** Encodes a version record for the store. */
export function encodeVersion(v: ConfigVersion): Uint8Array {
  return bytesOf(JSON.stringify(v));
}

/** Decodes and checks the shape of a version record; throws `MUSTER_CORRUPT_DATA`. */
export function decodeVersion(bytes: Uint8Array, key: string): ConfigVersion {
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(textOf(bytes)) as Record<string, unknown>;
  } catch (err) {
    throw new MusterError('MUSTER_CORRUPT_DATA', `configuration version at '${key}' is not JSON`, {
      cause: err,
      details: { key },
    });
  }
  const { version, activateAt, createdAt } = raw;
  if (
    typeof version !== 'number' ||
    !Number.isSafeInteger(version) ||
    version < 1 ||
    typeof activateAt !== 'number' ||
    !Number.isFinite(activateAt) ||
    !('value' in raw)
  ) {
    throw new MusterError('MUSTER_CORRUPT_DATA', `configuration version at '${key}' has the wrong shape`, {
      details: { key },
    });
  }
  return {
    version,
    activateAt,
    value: raw.value,
    createdAt: typeof createdAt === 'number' ? createdAt : 0,
    ...(typeof raw.author === 'string' ? { author: raw.author } : {}),
    ...(typeof raw.note === 'string' ? { note: raw.note } : {}),
    ...(typeof raw.cancelledAt === 'number' ? { cancelledAt: raw.cancelledAt } : {}),
  };
}
