/**
 * The etcd KV service (Range, Put, DeleteRange, Txn, Compact) on the memory engine.
 *
 * Transactions the Store port can express (compares on single keys, plain puts, deletes and reads)
 * take the engine's `txn`; the rest of etcd's transaction — compares over a key range, nested
 * transactions, `prev_kv` on puts and deletes, reads at a past revision, `ignore_value` /
 * `ignore_lease` — takes the memory engine's `txnTree`, with etcd's semantics.
 */
import type { Compare, CompareOp, KeySelector, KeyValue, TxnOp, TxnOpResult } from '../../store/internal.js';
import { NO_LEASE } from '../../store/internal.js';
import { toRange } from '../../store/internal.js';
import type { TxnTreeResult } from '../../store/internal.js';
import type { TreeOp, TreeResult, TxnTree } from '../../store/internal.js';
import { isMusterError } from '../../errors.js';
import type { ServiceImplementation } from './call.js';
import { header, type ResponseHeader, type ServiceContext, unary } from './context.js';
import {
  decodeKey,
  finishRange,
  kvOut,
  leaseOf,
  needsFullScan,
  type ProtoKeyValue,
  type RangeLike,
  selectorOf,
} from './convert.js';
import { rangeOf } from './auth.js';
import { authorizeLeaseKeys } from './lease.js';
import { ETCD } from './errors.js';

interface RangeRequest extends RangeLike {
  key: Buffer;
  range_end: Buffer;
  revision: string;
  serializable: boolean;
  keys_only: boolean;
  count_only: boolean;
}
interface RangeResponse {
  header: ResponseHeader;
  kvs: ProtoKeyValue[];
  more: boolean;
  count: number;
}
interface PutRequest {
  key: Buffer;
  value: Buffer;
  lease: string;
  prev_kv: boolean;
  ignore_value: boolean;
  ignore_lease: boolean;
}
interface DeleteRangeRequest {
  key: Buffer;
  range_end: Buffer;
  prev_kv: boolean;
}
interface CompareRequest {
  result: number;
  target: number;
  key: Buffer;
  target_union?: 'version' | 'create_revision' | 'mod_revision' | 'value' | 'lease';
  version?: string;
  create_revision?: string;
  mod_revision?: string;
  value?: Buffer;
  lease?: string;
  range_end: Buffer;
}
interface RequestOp {
  request?: 'request_range' | 'request_put' | 'request_delete_range' | 'request_txn';
  request_range?: RangeRequest;
  request_put?: PutRequest;
  request_delete_range?: DeleteRangeRequest;
  request_txn?: TxnRequest;
}
interface TxnRequest {
  compare: CompareRequest[];
  success: RequestOp[];
  failure: RequestOp[];
}

const RESULT_OPS: readonly CompareOp[] = ['=', '>', '<', '!='];

/** The KV service implementation. */
export function kvService(ctx: ServiceContext): ServiceImplementation {
  const store = ctx.store;

  /** RBAC: `user` may read (write) the request's range (nothing to check without RBAC). */
  const allow = (user: string | undefined, key: Buffer, end: Buffer | undefined, write: boolean): void => {
    if (user === undefined) return;
    const [k, e] = rangeOf(key, end);
    ctx.auth.authorize(user, k, e, write);
  };

  async function range(req: RangeRequest, _call: unknown, user: string | undefined): Promise<RangeResponse> {
    allow(user, req.key, req.range_end, false);
    const selector = selectorOf(req.key, req.range_end);
    const revision = Number(req.revision);
    const full = needsFullScan(req);
    const r = await store.range(selector, {
      ...(revision > 0 ? { revision } : {}),
      limit: full ? 0 : Number(req.limit),
      keysOnly: req.keys_only,
      countOnly: req.count_only,
    });
    let kvs: readonly KeyValue[] = r.kvs;
    let more = r.more;
    if (full && !req.count_only) ({ kvs, more } = finishRange(r.kvs, req));
    // etcd's header carries the current revision, also for reads of the past.
    const head = revision > 0 ? await store.headRevision() : r.revision;
    return { header: header(ctx, head), kvs: kvs.map(kvOut), more, count: r.count };
  }

  async function put(
    req: PutRequest,
    _call: unknown,
    user: string | undefined,
  ): Promise<{ header: ResponseHeader; prev_kv: ProtoKeyValue | null }> {
    const key = decodeKey(req.key);
    allow(user, req.key, undefined, true);
    if (user !== undefined && req.prev_kv) allow(user, req.key, undefined, false);
    if (key.length + req.value.length > ctx.maxRequestBytes) throw ETCD.tooLarge();
    if (ctx.alarms.noSpace) throw ETCD.noSpace();
    const lease = leaseOf(req.lease);
    if (lease === undefined) throw ETCD.leaseNotFound();
    // etcd refuses to attach a key to a lease whose keys the user could not delete by revoking it.
    if (user !== undefined && lease !== NO_LEASE) authorizeLeaseKeys(ctx, user, lease);
    if (req.ignore_value || req.ignore_lease) return putIgnoring(key, req, lease);
    const r = await store.put(key, req.value, { lease, prevKv: req.prev_kv });
    return { header: header(ctx, r.revision), prev_kv: r.prev ? kvOut(r.prev) : null };
  }

  /** `ignore_value` / `ignore_lease`: keep the current value or lease, atomically. */
  async function putIgnoring(
    key: string,
    req: PutRequest,
    lease: string,
  ): Promise<{ header: ResponseHeader; prev_kv: ProtoKeyValue | null }> {
    if (req.ignore_value && req.value.length > 0) throw ETCD.valueProvided();
    if (req.ignore_lease && lease !== NO_LEASE) throw ETCD.leaseProvided();
    for (;;) {
      const cur = await store.get(key);
      if (cur === undefined) throw ETCD.keyNotFound();
      const r = await store.txn(
        [{ key, target: 'modRevision', op: '=', value: cur.modRevision }],
        [
          {
            type: 'put',
            key,
            value: req.ignore_value ? cur.value : req.value,
            lease: req.ignore_lease ? cur.lease : lease,
          },
        ],
      );
      if (r.succeeded) return { header: header(ctx, r.revision), prev_kv: req.prev_kv ? kvOut(cur) : null };
    }
  }

  async function deleteRange(
    req: DeleteRangeRequest,
    _call: unknown,
    user: string | undefined,
  ): Promise<{ header: ResponseHeader; deleted: number; prev_kvs: ProtoKeyValue[] }> {
    allow(user, req.key, req.range_end, true);
    if (user !== undefined && req.prev_kv) allow(user, req.key, req.range_end, false);
    const r = await store.delete(selectorOf(req.key, req.range_end), { prevKv: req.prev_kv });
    return { header: header(ctx, r.revision), deleted: r.deleted, prev_kvs: r.prev.map(kvOut) };
  }

  /** RBAC for a transaction, as etcd checks it: every compare and every operation of both branches. */
  const allowTxn = (user: string, req: TxnRequest): void => {
    for (const c of req.compare) allow(user, c.key, c.range_end, false);
    for (const ops of [req.success, req.failure]) {
      for (const o of ops) {
        if (o.request_range) allow(user, o.request_range.key, o.request_range.range_end, false);
        else if (o.request_put) allow(user, o.request_put.key, undefined, true);
        else if (o.request_delete_range)
          allow(user, o.request_delete_range.key, o.request_delete_range.range_end, true);
        else if (o.request_txn) allowTxn(user, o.request_txn);
      }
    }
  };

  async function txn(
    req: TxnRequest,
    _call: unknown,
    user: string | undefined,
  ): Promise<{
    header: ResponseHeader;
    succeeded: boolean;
    responses: Record<string, unknown>[];
  }> {
    if (user !== undefined) allowTxn(user, req);
    if (txnBytes(req) > ctx.maxRequestBytes) throw ETCD.tooLarge();
    if (ctx.alarms.noSpace && txnPuts(req)) throw ETCD.noSpace();
    if (needsTree(req)) return txnTree(req);
    const compares = req.compare.map(toCompare);
    const success = req.success.map(toOp);
    const failure = req.failure.map(toOp);
    const r = await store.txn(
      compares,
      success.map((o) => o.op),
      failure.map((o) => o.op),
    );
    const ops = r.succeeded ? success : failure;
    const revs = new OpRevisions(r.revision, r.results.some(changes));
    const responses = r.results.map((res, i) => toResponseOp(res, ops[i]?.range, revs.next(res)));
    return { header: header(ctx, r.revision), succeeded: r.succeeded, responses };
  }

  /** The transactions only the memory engine's `txnTree` can answer. */
  async function txnTree(req: TxnRequest): Promise<{
    header: ResponseHeader;
    succeeded: boolean;
    responses: Record<string, unknown>[];
  }> {
    const tree = toTree(req);
    let r: TxnTreeResult;
    try {
      r = await store.txnTree(tree);
    } catch (err) {
      if (isMusterError(err, 'MUSTER_NOT_FOUND')) throw ETCD.keyNotFound();
      throw err;
    }
    const revs = new OpRevisions(r.revision, treeChanges(r.results));
    return {
      header: header(ctx, r.revision),
      succeeded: r.succeeded,
      responses: treeResponses(r.results, req, r.succeeded, revs),
    };
  }

  async function compact(
    req: { revision: string },
    _call: unknown,
    user: string | undefined,
  ): Promise<{ header: ResponseHeader }> {
    ctx.auth.requireRoot(user);
    await store.compact(Number(req.revision));
    return { header: header(ctx, await store.headRevision()) };
  }

  return {
    Range: unary(ctx, range),
    Put: unary(ctx, put),
    DeleteRange: unary(ctx, deleteRange),
    Txn: unary(ctx, txn),
    Compact: unary(ctx, compact),
  };
}

/** The bytes of keys and values a transaction carries (all branches, nested ones included). */
function txnBytes(req: TxnRequest): number {
  let n = 0;
  for (const c of req.compare) n += c.key.length + (c.value?.length ?? 0);
  for (const ops of [req.success, req.failure]) {
    for (const o of ops) {
      if (o.request_put) n += o.request_put.key.length + o.request_put.value.length;
      else if (o.request_txn) n += txnBytes(o.request_txn);
    }
  }
  return n;
}

/** True when a transaction may put a key (refused while NOSPACE is raised, as etcd does). */
function txnPuts(req: TxnRequest): boolean {
  for (const ops of [req.success, req.failure]) {
    for (const o of ops) if (o.request_put || (o.request_txn && txnPuts(o.request_txn))) return true;
  }
  return false;
}

/** True when a transaction needs more than the Store port's `txn` (see the file comment). */
function needsTree(req: TxnRequest): boolean {
  return (
    req.compare.some((c) => c.range_end !== undefined && c.range_end !== null && c.range_end.length > 0) ||
    req.success.some(opNeedsTree) ||
    req.failure.some(opNeedsTree)
  );
}

function opNeedsTree(o: RequestOp): boolean {
  if (o.request_put) return o.request_put.prev_kv || o.request_put.ignore_value || o.request_put.ignore_lease;
  if (o.request_delete_range) return o.request_delete_range.prev_kv;
  if (o.request_range) return Number(o.request_range.revision) > 0;
  return o.request === 'request_txn' || o.request_txn !== undefined;
}

function toTree(req: TxnRequest): TxnTree {
  return {
    compares: req.compare.map((c) => {
      const compare = toCompare({ ...c, range_end: Buffer.alloc(0) });
      if (c.range_end === undefined || c.range_end === null || c.range_end.length === 0) return { compare };
      return { compare, range: toRange(selectorOf(c.key, c.range_end), false) };
    }),
    success: req.success.map(toTreeOp),
    failure: req.failure.map(toTreeOp),
  };
}

function toTreeOp(o: RequestOp): TreeOp {
  if (o.request_put) {
    const p = o.request_put;
    const lease = leaseOf(p.lease);
    if (lease === undefined) throw ETCD.leaseNotFound();
    if (p.ignore_value && p.value.length > 0) throw ETCD.valueProvided();
    if (p.ignore_lease && lease !== NO_LEASE) throw ETCD.leaseProvided();
    return {
      type: 'put',
      key: decodeKey(p.key),
      value: p.value,
      lease,
      prevKv: p.prev_kv,
      ignoreValue: p.ignore_value,
      ignoreLease: p.ignore_lease,
    };
  }
  if (o.request_delete_range) {
    const d = o.request_delete_range;
    return { type: 'delete', range: toRange(selectorOf(d.key, d.range_end), false), prevKv: d.prev_kv };
  }
  if (o.request_range) {
    const r = o.request_range;
    const full = needsFullScan(r);
    return {
      type: 'range',
      range: toRange(selectorOf(r.key, r.range_end), true),
      revision: Math.max(0, Number(r.revision)),
      limit: full ? 0 : Number(r.limit),
      keysOnly: r.keys_only,
    };
  }
  if (o.request_txn) return { type: 'txn', txn: toTree(o.request_txn) };
  throw ETCD.invalid('a transaction operation is empty');
}

/**
 * The header revision of each operation's response inside a transaction, as etcd 3.4 gives it
 * (its write transaction's view): `beginRev` (the head before the transaction) until the first
 * change, `beginRev + 1` from then on; a put always `beginRev + 1`. The headers hold only the
 * revision, as etcd's nested headers do (no ids, no raft term).
 */
class OpRevisions {
  readonly #begin: number;
  #changed = false;

  /** `revision`: the transaction's answer; `wrote`: whether it changed anything. */
  constructor(revision: number, wrote: boolean) {
    this.#begin = wrote ? revision - 1 : revision;
  }

  /** The header of the next operation's response (operations in order, nested ones included). */
  next(res: { type: string; deleted?: number }): ResponseHeader {
    if (changes(res)) this.#changed = true;
    return nestedHeader(this.#changed ? this.#begin + 1 : this.#begin);
  }

  /** The header of a nested transaction's response: unset unless its level put a key (etcd 3.4). */
  nested(results: readonly TreeResult[]): ResponseHeader {
    return nestedHeader(results.some((r) => r.type === 'put') ? this.#begin + 1 : 0);
  }
}

function nestedHeader(revision: number): ResponseHeader {
  return { cluster_id: '0', member_id: '0', revision, raft_term: 0 };
}

function changes(res: { type: string; deleted?: number }): boolean {
  return res.type === 'put' || (res.type === 'delete' && (res.deleted ?? 0) > 0);
}

function treeChanges(results: readonly TreeResult[]): boolean {
  return results.some((r) => (r.type === 'txn' ? treeChanges(r.results) : changes(r)));
}

/** The responses of a tree transaction, with ranges sorted and filtered as their requests ask. */
function treeResponses(
  results: readonly TreeResult[],
  req: TxnRequest,
  succeeded: boolean,
  revs: OpRevisions,
): Record<string, unknown>[] {
  const ops = succeeded ? req.success : req.failure;
  return results.map((res, i) => {
    const op = ops[i];
    switch (res.type) {
      case 'put':
        return { response_put: { header: revs.next(res), prev_kv: res.prev ? kvOut(res.prev) : null } };
      case 'delete':
        return {
          response_delete_range: {
            header: revs.next(res),
            deleted: res.deleted,
            prev_kvs: res.prev.map(kvOut),
          },
        };
      case 'range':
        return toResponseOp(res, op?.request_range, revs.next(res));
      case 'txn': {
        const responses = treeResponses(res.results, op?.request_txn as TxnRequest, res.succeeded, revs);
        return { response_txn: { header: revs.nested(res.results), succeeded: res.succeeded, responses } };
      }
    }
  });
}

function toCompare(c: CompareRequest): Compare {
  if (c.range_end !== undefined && c.range_end !== null && c.range_end.length > 0)
    throw ETCD.unsupported('a compare over a key range');
  const key = decodeKey(c.key);
  const op = RESULT_OPS[c.result];
  if (op === undefined) throw ETCD.invalid(`unknown compare result ${c.result}`);
  switch (c.target) {
    case 0:
      return { key, op, target: 'version', value: Number(c.version ?? 0) };
    case 1:
      return { key, op, target: 'createRevision', value: Number(c.create_revision ?? 0) };
    case 2:
      return { key, op, target: 'modRevision', value: Number(c.mod_revision ?? 0) };
    case 3:
      return { key, op, target: 'value', value: c.value ?? Buffer.alloc(0) };
    case 4: {
      const lease = String(c.lease ?? '0');
      // A negative lease id matches no key; compare against an id no lease can have.
      return { key, op, target: 'lease', value: /^-/.test(lease) ? '0' : lease };
    }
    default:
      throw ETCD.invalid(`unknown compare target ${c.target}`);
  }
}

/** A transaction operation, and for ranges the request (sorting and filters happen afterwards). */
function toOp(o: RequestOp): { op: TxnOp; range?: RangeRequest } {
  if (o.request_put) {
    const p = o.request_put;
    if (p.ignore_value || p.ignore_lease)
      throw ETCD.unsupported('ignore_value or ignore_lease inside a transaction');
    const lease = leaseOf(p.lease);
    if (lease === undefined) throw ETCD.leaseNotFound();
    return { op: { type: 'put', key: decodeKey(p.key), value: p.value, lease } };
  }
  if (o.request_delete_range) {
    const d = o.request_delete_range;
    return { op: { type: 'delete', selector: selectorOf(d.key, d.range_end) } };
  }
  if (o.request_range) {
    const r = o.request_range;
    if (Number(r.revision) > 0) throw ETCD.unsupported('a read at a past revision inside a transaction');
    const selector: KeySelector = selectorOf(r.key, r.range_end);
    const full = needsFullScan(r);
    return {
      op: { type: 'range', selector, limit: full ? 0 : Number(r.limit), keysOnly: r.keys_only },
      range: r,
    };
  }
  if (o.request === 'request_txn') throw ETCD.unsupported('a nested transaction');
  throw ETCD.invalid('a transaction operation is empty');
}

function toResponseOp(
  res: TxnOpResult,
  req: RangeRequest | undefined,
  h: ResponseHeader,
): Record<string, unknown> {
  switch (res.type) {
    case 'put':
      return { response_put: { header: h, prev_kv: null } };
    case 'delete':
      return { response_delete_range: { header: h, deleted: res.deleted, prev_kvs: [] } };
    case 'range': {
      let kvs: readonly KeyValue[] = res.kvs;
      let more = res.more;
      if (req !== undefined && needsFullScan(req)) ({ kvs, more } = finishRange(res.kvs, req));
      if (req?.count_only === true)
        return { response_range: { header: h, kvs: [], more: false, count: res.count } };
      return { response_range: { header: h, kvs: kvs.map(kvOut), more, count: res.count } };
    }
  }
}
