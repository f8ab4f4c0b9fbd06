/**
 * etcd's full transaction for the embedded server: compares over a key range, nested transactions,
 * `prev_kv` on puts and deletes, reads at a past revision, and puts that keep the current value or
 * lease (`ignore_value` / `ignore_lease`). Not part of the Store port (the etcd engine would need
 * the same); the server uses it for the requests the port's {@link Store.txn} cannot express.
 *
 * Order, as etcd applies a transaction: every compare of every nested level is evaluated against the
 * state before the transaction and picks a path; the chosen operations are checked (leases exist,
 * keys to keep a value or lease of exist, read revisions are held); then they are applied in order at
 * one new revision. Anything refused leaves the store untouched.
 */
import { MusterError } from '../../errors.js';
import { inRange, MAX_TXN_OPS, type Range } from '../keys.js';
import { evaluateCompare } from '../txn-rules.js';
import type { Compare, KeyValue, LeaseId } from '../types.js';
import type { KeyIndex } from './key-index.js';
import type { WriteSet } from './write-set.js';

/** A compare over one key, or over every key of `range` (when given). */
export interface TreeCompare {
  readonly compare: Compare;
  readonly range?: Range;
}

export type TreeOp =
  | {
      readonly type: 'put';
      readonly key: string;
      readonly value: Uint8Array;
      readonly lease: LeaseId;
      readonly prevKv: boolean;
      readonly ignoreValue: boolean;
      readonly ignoreLease: boolean;
    }
  | { readonly type: 'delete'; readonly range: Range; readonly prevKv: boolean }
  | {
      readonly type: 'range';
      readonly range: Range;
      /** 0: the transaction's own view (its earlier writes included); else a past revision. */
      readonly revision: number;
      readonly limit: number;
      readonly keysOnly: boolean;
    }
  | { readonly type: 'txn'; readonly txn: TxnTree };

export interface TxnTree {
  readonly compares: readonly TreeCompare[];
  readonly success: readonly TreeOp[];
  readonly failure: readonly TreeOp[];
}

export type TreeResult =
  | { readonly type: 'put'; readonly prev: KeyValue | undefined }
  | { readonly type: 'delete'; readonly deleted: number; readonly prev: readonly KeyValue[] }
  | {
      readonly type: 'range';
      readonly kvs: readonly KeyValue[];
      readonly count: number;
      readonly more: boolean;
    }
  | { readonly type: 'txn'; readonly succeeded: boolean; readonly results: readonly TreeResult[] };

/** The branch each (nested) transaction takes. */
export interface TreePath {
  readonly succeeded: boolean;
  readonly ops: readonly TreeOp[];
  /** For each `txn` operation of `ops`, by position. */
  readonly nested: ReadonlyMap<number, TreePath>;
}

/**
 * Checks sizes and etcd's rule that a path writes a key at most once (puts, and puts inside a deleted
 * range, across nested levels; a nested transaction's two branches may put the same key). Throws
 * `MUSTER_TXN_TOO_LARGE` or `MUSTER_INVALID_ARGUMENT` (a message with "twice").
 */
export function checkTree(tree: TxnTree): void {
  if (
    tree.compares.length > MAX_TXN_OPS ||
    tree.success.length > MAX_TXN_OPS ||
    tree.failure.length > MAX_TXN_OPS
  ) {
    throw new MusterError(
      'MUSTER_TXN_TOO_LARGE',
      `a transaction level has more than ${MAX_TXN_OPS} operations`,
    );
  }
  intervals(tree.success);
  intervals(tree.failure);
}

function intervals(ops: readonly TreeOp[]): { puts: Set<string>; dels: Range[] } {
  const dels: Range[] = [];
  for (const op of ops) if (op.type === 'delete') dels.push(op.range);
  const puts = new Set<string>();
  const clash = (key: string): boolean => puts.has(key) || dels.some((r) => inRange(r, key));
  for (const op of ops) {
    if (op.type !== 'txn') continue;
    checkTree(op.txn);
    const then = intervals(op.txn.success);
    const otherwise = intervals(op.txn.failure);
    for (const k of then.puts) {
      if (clash(k)) throw twice(k);
      puts.add(k);
    }
    for (const k of otherwise.puts) {
      if (puts.has(k) && !then.puts.has(k)) throw twice(k);
      if (dels.some((r) => inRange(r, k))) throw twice(k);
      puts.add(k);
    }
    dels.push(...then.dels, ...otherwise.dels);
  }
  for (const op of ops) {
    if (op.type !== 'put') continue;
    if (clash(op.key)) throw twice(op.key);
    puts.add(op.key);
  }
  return { puts, dels };
}

function twice(key: string): MusterError {
  return new MusterError('MUSTER_INVALID_ARGUMENT', `a transaction writes key '${key}' twice`, {
    details: { key },
  });
}

/** Evaluates every compare, at every level, against the current state: the path the transaction takes. */
export function choosePath(tree: TxnTree, index: KeyIndex): TreePath {
  const succeeded = tree.compares.every((c) => holds(c, index));
  const ops = succeeded ? tree.success : tree.failure;
  const nested = new Map<number, TreePath>();
  ops.forEach((op, i) => {
    if (op.type === 'txn') nested.set(i, choosePath(op.txn, index));
  });
  return { succeeded, ops, nested };
}

/** etcd's `applyCompare`: every key of the range must satisfy it; no key compares as an absent key. */
function holds(c: TreeCompare, index: KeyIndex): boolean {
  if (c.range === undefined) return evaluateCompare(c.compare, index.live(c.compare.key));
  const kvs = index.liveKeysIn(c.range);
  if (kvs.length === 0) return c.compare.target === 'value' ? false : evaluateCompare(c.compare, undefined);
  return kvs.every((k) => evaluateCompare(c.compare, index.live(k)));
}

/** Every operation on the chosen path, nested ones included, in order. */
export function* pathOps(path: TreePath): Generator<TreeOp> {
  for (let i = 0; i < path.ops.length; i++) {
    const op = path.ops[i] as TreeOp;
    const nested = path.nested.get(i);
    if (nested !== undefined) yield* pathOps(nested);
    else yield op;
  }
}

/** Applies the chosen path to `ws`. Ranges at revision 0 see earlier writes of the transaction. */
export function applyPath(path: TreePath, ws: WriteSet, index: KeyIndex, head: number): TreeResult[] {
  const results: TreeResult[] = [];
  path.ops.forEach((op, i) => {
    switch (op.type) {
      case 'put': {
        const prev = index.live(op.key);
        const value = op.ignoreValue && prev !== undefined ? prev.value : op.value;
        const lease = op.ignoreLease && prev !== undefined ? prev.lease : op.lease;
        ws.put(op.key, value, lease);
        results.push({ type: 'put', prev: op.prevKv ? prev : undefined });
        return;
      }
      case 'delete': {
        const prev: KeyValue[] = [];
        for (const key of index.liveKeysIn(op.range)) {
          const old = ws.delete(key);
          if (old !== undefined) prev.push(old);
        }
        results.push({ type: 'delete', deleted: prev.length, prev: op.prevKv ? prev : [] });
        return;
      }
      case 'range': {
        // A past revision is read from history (never from the live values this transaction wrote).
        const r =
          op.revision > 0
            ? index.range(op.range, op.revision, Infinity, op.limit, op.keysOnly, false)
            : index.range(op.range, head, head, op.limit, op.keysOnly, false);
        results.push({ type: 'range', kvs: r.kvs, count: r.count, more: r.more });
        return;
      }
      case 'txn': {
        const nested = path.nested.get(i) as TreePath;
        results.push({
          type: 'txn',
          succeeded: nested.succeeded,
          results: applyPath(nested, ws, index, head),
        });
        return;
      }
    }
  });
  return results;
}
