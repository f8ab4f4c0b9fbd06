/**
 * Keys, values, selectors and input validation shared by every engine, so the same bad input gets
 * the same coded error on memory, etcd and the embedded server.
 */
import { invalidArgument, MusterError } from '../errors.js';
import { type KeySelector, type LeaseId, MAX_LEASE_TTL_SECONDS, type ValueInput } from './types.js';

/** Largest value accepted (etcd's default request limit is 1.5 MiB; keep headroom for the key). */
export const MAX_VALUE_BYTES = 1024 * 1024;
/** Largest key accepted; etcd has no separate limit, but keys this long are always a bug. */
export const MAX_KEY_BYTES = 4096;
/** Most operations in one transaction (etcd's default `--max-txn-ops`). */
export const MAX_TXN_OPS = 128;

/**
 * Size limits an engine enforces on keys and values. The Store port's defaults are
 * {@link PORT_LIMITS}; the embedded server, whose keys are bytes, lifts them to etcd's request limit.
 */
export interface KeyLimits {
  /** Largest key in UTF-8 bytes. */
  readonly keyBytes: number;
  /** Largest value in bytes. */
  readonly valueBytes: number;
}

/** The Store port's limits: {@link MAX_KEY_BYTES} and {@link MAX_VALUE_BYTES}. */
export const PORT_LIMITS: KeyLimits = { keyBytes: MAX_KEY_BYTES, valueBytes: MAX_VALUE_BYTES };

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: false });
export const EMPTY_BYTES: Uint8Array = new Uint8Array(0);

/** Validates a key: a non-empty string of at most {@link MAX_KEY_BYTES} (or `limits.keyBytes`) UTF-8 bytes. */
export function checkKey(key: unknown, what = 'key', limits: KeyLimits = PORT_LIMITS): asserts key is string {
  if (typeof key !== 'string') throw invalidArgument(`${what} must be a string, got ${typeof key}`);
  if (key.length === 0) throw invalidArgument(`${what} must not be empty`);
  const max = limits.keyBytes;
  if (key.length > max / 3 && encoder.encode(key).length > max) {
    throw new MusterError('MUSTER_VALUE_TOO_LARGE', `${what} is longer than ${max} bytes`, {
      details: { key: key.slice(0, 64) },
    });
  }
}

/** Converts a value to bytes (strings as UTF-8), enforcing {@link MAX_VALUE_BYTES} (or `limits.valueBytes`). */
export function toBytes(value: unknown, key?: string, limits: KeyLimits = PORT_LIMITS): Uint8Array {
  let bytes: Uint8Array;
  if (value instanceof Uint8Array) bytes = value;
  else if (typeof value === 'string') bytes = encoder.encode(value);
  else {
    throw invalidArgument(
      `value${key ? ` for '${key}'` : ''} must be a Uint8Array or a string, got ${describeValue(value)}`,
      {
        ...(key === undefined ? {} : { key }),
      },
    );
  }
  if (bytes.length > limits.valueBytes) {
    throw new MusterError(
      'MUSTER_VALUE_TOO_LARGE',
      `value${key ? ` for '${key}'` : ''} is ${bytes.length} bytes; the limit is ${limits.valueBytes}`,
      { details: { ...(key === undefined ? {} : { key }), bytes: bytes.length } },
    );
  }
  return bytes;
}

/** Validates a lease TTL in whole seconds: 1 ≤ ttl ≤ {@link MAX_LEASE_TTL_SECONDS}. */
export function checkTtl(ttlSeconds: unknown): asserts ttlSeconds is number {
  if (
    typeof ttlSeconds !== 'number' ||
    !Number.isInteger(ttlSeconds) ||
    ttlSeconds < 1 ||
    ttlSeconds > MAX_LEASE_TTL_SECONDS
  ) {
    throw invalidArgument(
      `lease TTL must be a whole number of seconds between 1 and ${MAX_LEASE_TTL_SECONDS}, got ${String(ttlSeconds)}`,
    );
  }
}

/** Validates a lease id: a decimal string of a positive 64-bit integer. */
export function checkLeaseId(id: unknown): asserts id is LeaseId {
  if (typeof id !== 'string' || !/^[1-9]\d{0,18}$/.test(id)) {
    throw invalidArgument(
      `lease id must be a decimal string of a positive integer, got ${describeValue(id)}`,
    );
  }
}

/** Validates a revision argument: a positive safe integer. */
export function checkRevision(revision: unknown, what = 'revision'): asserts revision is number {
  if (typeof revision !== 'number' || !Number.isSafeInteger(revision) || revision < 1) {
    throw invalidArgument(`${what} must be a positive integer, got ${describeValue(revision)}`);
  }
}

/** A selector reduced to one of three shapes, validated. */
export type Range =
  | { readonly kind: 'key'; readonly key: string }
  | { readonly kind: 'prefix'; readonly prefix: string }
  | { readonly kind: 'range'; readonly start: string; readonly end: string };

/**
 * Normalizes `string | KeySelector`. A bare string means a prefix for range/watch
 * (`asPrefix = true`) and one key for delete (`asPrefix = false`).
 */
export function toRange(selector: unknown, asPrefix: boolean, limits: KeyLimits = PORT_LIMITS): Range {
  if (typeof selector === 'string') {
    if (asPrefix) {
      return { kind: 'prefix', prefix: selector };
    }
    checkKey(selector, 'key', limits);
    return { kind: 'key', key: selector };
  }
  if (selector === null || typeof selector !== 'object') {
    throw invalidArgument(
      `a key selector must be a string, { key }, { prefix } or { start, end }; got ${describeValue(selector)}`,
    );
  }
  const s = selector as Partial<Record<'key' | 'prefix' | 'start' | 'end', unknown>>;
  if ('prefix' in s) {
    if (typeof s.prefix !== 'string')
      throw invalidArgument(`prefix must be a string, got ${describeValue(s.prefix)}`);
    return { kind: 'prefix', prefix: s.prefix };
  }
  if ('key' in s) {
    checkKey(s.key, 'key', limits);
    return { kind: 'key', key: s.key };
  }
  if ('start' in s) {
    checkKey(s.start, 'range start', limits);
    if (typeof s.end !== 'string')
      throw invalidArgument(`range end must be a string, got ${describeValue(s.end)}`);
    if (compareKeys(s.end, s.start) < 0) {
      throw invalidArgument(`range end '${s.end}' sorts before its start '${s.start}'`, { key: s.start });
    }
    return { kind: 'range', start: s.start, end: s.end };
  }
  throw invalidArgument('a key selector needs one of: key, prefix, or start and end');
}

/** True when `key` is inside `range`. */
export function inRange(range: Range, key: string): boolean {
  switch (range.kind) {
    case 'key':
      return key === range.key;
    case 'prefix':
      return key.startsWith(range.prefix);
    case 'range':
      return compareKeys(key, range.start) >= 0 && compareKeys(key, range.end) < 0;
  }
}

/**
 * Orders keys as etcd does (by UTF-8 bytes), which is code-point order. JavaScript's `<` compares
 * UTF-16 code units, which differs only for astral characters, so those are corrected here.
 */
export function compareKeys(a: string, b: string): number {
  if (a === b) return 0;
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    let x = a.charCodeAt(i);
    let y = b.charCodeAt(i);
    if (x !== y) {
      if (x >= 0xd800 && y >= 0xd800) {
        x = x < 0xe000 ? x + 0x2000 : x - 0x800;
        y = y < 0xe000 ? y + 0x2000 : y - 0x800;
      }
      return x < y ? -1 : 1;
    }
  }
  return a.length - b.length;
}

/** Decodes a value as UTF-8 text. */
export function textOf(value: Uint8Array): string {
  return decoder.decode(value);
}

/** Encodes text as UTF-8 bytes. */
export function bytesOf(text: string): Uint8Array {
  return encoder.encode(text);
}

/** Parses a value as JSON; throws `MUSTER_INVALID_ARGUMENT` with the key when it is not JSON. */
export function jsonOf<T = unknown>(value: Uint8Array, key?: string): T {
  try {
    return JSON.parse(decoder.decode(value)) as T;
  } catch (err) {
    throw new MusterError('MUSTER_INVALID_ARGUMENT', `value${key ? ` of '${key}'` : ''} is not valid JSON`, {
      cause: err,
      details: key === undefined ? {} : { key },
    });
  }
}

/** Encodes a JSON value as UTF-8 bytes. */
export function jsonBytes(value: unknown): Uint8Array {
  return encoder.encode(JSON.stringify(value));
}

/** Identity for a ValueInput already validated elsewhere. */
export function valueToBytes(value: ValueInput): Uint8Array {
  return typeof value === 'string' ? encoder.encode(value) : value;
}

/** A short description of any value for error messages. */
export function describeValue(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'string') return `'${value.length > 40 ? `${value.slice(0, 40)}…` : value}'`;
  if (typeof value === 'object') return 'an object';
  if (typeof value === 'function') return 'a function';
  if (typeof value === 'symbol') return value.toString();
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint')
    return `${typeof value} ${value}`;
  return typeof value;
}

/** Re-exported for engines that build selectors. */
export type { KeySelector };
