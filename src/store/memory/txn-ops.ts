/**
 * The operations of a memory-engine transaction: checked and normalised up front, so that a bad one
 * leaves the store untouched, then applied in order to one {@link WriteSet}.
 */
import { MusterError } from '../../errors.js';
import {
  checkKey,
  checkLeaseId,
  describeValue,
  inRange,
  type KeyLimits,
  MAX_TXN_OPS,
  PORT_LIMITS,
  type Range,
  toBytes,
  toRange,
} from '../keys.js';
import { type LeaseId, NO_LEASE, type TxnOp, type TxnOpResult } from '../types.js';
import type { KeyIndex } from './key-index.js';
import type { WriteSet } from './write-set.js';

/** A {@link TxnOp} with its key or range checked and its value in bytes. */
export type PreparedOp =
  | { type: 'put'; key: string; value: Uint8Array; lease: LeaseId }
  | { type: 'delete'; range: Range }
  | { type: 'range'; range: Range; limit: number; keysOnly: boolean };

/**
 * Checks and normalises the operations of one branch (`onSuccess` or `onFailure`). Throws
 * `MUSTER_TXN_TOO_LARGE` past {@link MAX_TXN_OPS}, and `MUSTER_INVALID_ARGUMENT` for a malformed
 * operation or a key written twice (as etcd refuses).
 */
export function prepareOps(
  ops: readonly TxnOp[],
  branch: string,
  limits: KeyLimits = PORT_LIMITS,
): PreparedOp[] {
  if (!Array.isArray(ops))
    throw new MusterError('MUSTER_INVALID_ARGUMENT', `${branch} must be an array of operations`);
  if (ops.length > MAX_TXN_OPS) {
    throw new MusterError(
      'MUSTER_TXN_TOO_LARGE',
      `${branch} has ${ops.length} operations; the limit is ${MAX_TXN_OPS}`,
    );
  }
  const prepared: PreparedOp[] = ops.map((op: TxnOp) => {
    switch (op?.type) {
      case 'put': {
        checkKey(op.key, 'key', limits);
        const lease = op.lease ?? NO_LEASE;
        if (lease !== NO_LEASE) checkLeaseId(lease);
        return { type: 'put', key: op.key, value: toBytes(op.value, op.key, limits), lease };
      }
      case 'delete':
        return { type: 'delete', range: toRange(op.selector, false, limits) };
      case 'range':
        checkLimit(op.limit);
        return {
          type: 'range',
          range: toRange(op.selector, true, limits),
          limit: op.limit ?? 0,
          keysOnly: op.keysOnly === true,
        };
      default:
        throw new MusterError(
          'MUSTER_INVALID_ARGUMENT',
          `${branch} has an operation of unknown type '${String((op as { type?: unknown } | null)?.type)}'; use put, delete or range`,
        );
    }
  });
  // etcd refuses a transaction that writes the same key twice (puts, or a put inside a deleted range).
  const putKeys = new Set<string>();
  for (const op of prepared) {
    if (op.type !== 'put') continue;
    if (putKeys.has(op.key)) {
      throw new MusterError(
        'MUSTER_INVALID_ARGUMENT',
        `${branch} puts key '${op.key}' twice; a transaction may write a key once`,
        {
          details: { key: op.key },
        },
      );
    }
    putKeys.add(op.key);
  }
  for (const op of prepared) {
    if (op.type !== 'delete') continue;
    for (const key of putKeys) {
      if (inRange(op.range, key)) {
        throw new MusterError('MUSTER_INVALID_ARGUMENT', `${branch} both puts and deletes key '${key}'`, {
          details: { key },
        });
      }
    }
  }
  return prepared;
}

/**
 * Applies prepared operations in order to `ws` (the caller checked their leases). A range sees the
 * transaction's own earlier writes, and reports the revision `head` the transaction started from.
 */
export function applyOps(
  ops: readonly PreparedOp[],
  ws: WriteSet,
  index: KeyIndex,
  head: number,
): TxnOpResult[] {
  const results: TxnOpResult[] = [];
  for (const op of ops) {
    if (op.type === 'put') {
      ws.put(op.key, op.value, op.lease);
      results.push({ type: 'put', revision: ws.revision });
    } else if (op.type === 'delete') {
      let deleted = 0;
      for (const key of index.liveKeysIn(op.range)) {
        if (ws.delete(key) !== undefined) deleted++;
      }
      results.push({ type: 'delete', deleted });
    } else {
      const r = index.range(op.range, head, head, op.limit, op.keysOnly, false);
      results.push({ type: 'range', kvs: r.kvs, count: r.count, more: r.more });
    }
  }
  return results;
}

/** Throws `MUSTER_INVALID_ARGUMENT` unless `limit` is absent or a non-negative integer. */
export function checkLimit(limit: unknown): void {
  if (limit !== undefined && (typeof limit !== 'number' || !Number.isSafeInteger(limit) || limit < 0)) {
    throw new MusterError(
      'MUSTER_INVALID_ARGUMENT',
      `limit must be a non-negative integer, got ${describeValue(limit)}`,
    );
  }
}
