/** Transaction compares, evaluated exactly as etcd does. */
import { invalidArgument } from '../errors.js';
import { checkKey, checkLeaseId, type KeyLimits, PORT_LIMITS, toBytes } from './keys.js';
import type { Compare, CompareOp, KeyValue } from './types.js';

const OPS: ReadonlySet<string> = new Set(['=', '!=', '<', '>']);
const TARGETS: ReadonlySet<string> = new Set(['value', 'version', 'createRevision', 'modRevision', 'lease']);

/** Validates every compare up front, so a bad one leaves the store untouched. */
export function validateCompares(compares: readonly Compare[], limits: KeyLimits = PORT_LIMITS): void {
  if (!Array.isArray(compares)) throw invalidArgument('compares must be an array');
  for (const c of compares as unknown[]) {
    if (c === null || typeof c !== 'object')
      throw invalidArgument('each compare must be an object { key, target, op, value }');
    const { key, target, op, value } = c as Record<string, unknown>;
    checkKey(key, 'compare key', limits);
    if (typeof target !== 'string' || !TARGETS.has(target)) {
      throw invalidArgument(
        `compare target '${String(target)}' is unknown; use value, version, createRevision, modRevision or lease`,
        { key },
      );
    }
    if (typeof op !== 'string' || !OPS.has(op)) {
      throw invalidArgument(`compare operator '${String(op)}' is unknown; use =, !=, < or >`, { key });
    }
    if (target === 'value') toBytes(value, key, limits);
    else if (target === 'lease') {
      if (value !== '0') checkLeaseId(value);
    } else if (typeof value !== 'number' || !Number.isSafeInteger(value)) {
      throw invalidArgument(`compare on ${target} of '${key}' needs an integer value, got ${String(value)}`, {
        key,
      });
    }
  }
}

/** Evaluates one (validated) compare against the key's current value (`undefined` when absent). */
export function evaluateCompare(c: Compare, kv: KeyValue | undefined): boolean {
  switch (c.target) {
    case 'value':
      if (kv === undefined) return false; // as etcd: a value compare on a missing key fails
      return holds(compareValues(kv.value, toBytes(c.value)), c.op);
    case 'version':
      return holds(Math.sign((kv?.version ?? 0) - c.value), c.op);
    case 'createRevision':
      return holds(Math.sign((kv?.createRevision ?? 0) - c.value), c.op);
    case 'modRevision':
      return holds(Math.sign((kv?.modRevision ?? 0) - c.value), c.op);
    case 'lease': {
      const a = BigInt(kv?.lease ?? '0');
      const b = BigInt(c.value);
      return holds(a === b ? 0 : a < b ? -1 : 1, c.op);
    }
  }
}

function holds(cmp: number, op: CompareOp): boolean {
  switch (op) {
    case '=':
      return cmp === 0;
    case '!=':
      return cmp !== 0;
    case '<':
      return cmp < 0;
    case '>':
      return cmp > 0;
  }
}

/** Byte-wise comparison, as etcd compares values. */
export function compareValues(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const d = (a[i] as number) - (b[i] as number);
    if (d !== 0) return d < 0 ? -1 : 1;
  }
  return Math.sign(a.length - b.length);
}
