/**
 * Hand-written protobuf codecs for the hot KV RPCs (Range, Put, DeleteRange, Txn).
 *
 * Why: profiled under sequential gets and txns, protobufjs through `@grpc/proto-loader` took about
 * 16 % of the server's busy CPU — most of it in `toObject`/`fromObject`, which turn every int64
 * into a `Long` and back into a decimal string and build default-valued fields one by one. These
 * codecs read and write the wire format directly and produce (and take) **exactly** the objects the
 * loader does (`keepCase`, `longs: String`, `defaults: true`, `oneofs: true`; bytes as Buffers that
 * share the request's memory, as protobufjs's do) — the form every handler and the table-driven
 * codec of proto-codec.ts (which serves every other message) use;
 * `test/server/serve-wire.test.ts` checks both directions against protobufjs on random messages.
 */

import { ProtoReader as In, ProtoWriter as Out } from '../../util/protobuf.js';

const out = new Out();

interface WireHeader {
  cluster_id: string;
  member_id: string;
  revision: number | string;
  raft_term: number | string;
}

interface WireKv {
  key: Uint8Array;
  value: Uint8Array;
  create_revision: number | string;
  mod_revision: number | string;
  version: number | string;
  lease: number | string;
}

/**
 * The encoded `cluster_id` and `member_id` of the last header written: they never change on a
 * server, and as uint64s above 2^53 each would cost a BigInt conversion per response.
 */
let idsFor: { cluster: string; member: string; bytes: Buffer } | undefined;

function header(field: number, h: WireHeader | null | undefined): void {
  if (h == null) return;
  const at = out.begin(field);
  if (idsFor === undefined || idsFor.cluster !== h.cluster_id || idsFor.member !== h.member_id) {
    out.int(1, h.cluster_id);
    out.int(2, h.member_id);
    idsFor = {
      cluster: h.cluster_id,
      member: h.member_id,
      bytes: Buffer.from(out.buf.subarray(at + 1, out.pos)),
    };
  } else {
    out.room(idsFor.bytes.length);
    idsFor.bytes.copy(out.buf, out.pos);
    out.pos += idsFor.bytes.length;
  }
  out.int(3, h.revision);
  out.int(4, h.raft_term);
  out.end(at);
}

function kv(field: number, v: WireKv | null | undefined): void {
  if (v == null) return;
  const at = out.begin(field);
  out.bytes(1, v.key);
  out.int(2, v.create_revision);
  out.int(3, v.mod_revision);
  out.int(4, v.version);
  out.bytes(5, v.value);
  out.int(6, v.lease);
  out.end(at);
}

interface WireRangeResponse {
  header: WireHeader;
  kvs: readonly WireKv[];
  more: boolean;
  count: number | string;
}
interface WirePutResponse {
  header: WireHeader;
  prev_kv?: WireKv | null;
}
interface WireDeleteResponse {
  header: WireHeader;
  deleted: number | string;
  prev_kvs?: readonly WireKv[];
}
interface WireTxnResponse {
  header: WireHeader;
  succeeded: boolean;
  responses: readonly WireResponseOp[];
}
interface WireResponseOp {
  response_range?: WireRangeResponse;
  response_put?: WirePutResponse;
  response_delete_range?: WireDeleteResponse;
  response_txn?: WireTxnResponse;
}

function rangeBody(r: WireRangeResponse): void {
  header(1, r.header);
  for (const v of r.kvs ?? []) kv(2, v);
  out.bool(3, r.more);
  out.int(4, r.count);
}
function putBody(r: WirePutResponse): void {
  header(1, r.header);
  kv(2, r.prev_kv);
}
function deleteBody(r: WireDeleteResponse): void {
  header(1, r.header);
  out.int(2, r.deleted);
  for (const v of r.prev_kvs ?? []) kv(3, v);
}
function txnBody(r: WireTxnResponse): void {
  header(1, r.header);
  out.bool(2, r.succeeded);
  for (const op of r.responses ?? []) {
    const at = out.begin(3);
    if (op.response_range != null) nested(1, op.response_range, rangeBody);
    else if (op.response_put != null) nested(2, op.response_put, putBody);
    else if (op.response_delete_range != null) nested(3, op.response_delete_range, deleteBody);
    else if (op.response_txn != null) nested(4, op.response_txn, txnBody);
    out.end(at);
  }
}
function nested<T>(field: number, value: T, body: (v: T) => void): void {
  const at = out.begin(field);
  body(value);
  out.end(at);
}

interface WireEvent {
  type: number;
  kv: WireKv | null;
  prev_kv?: WireKv | null;
}
interface WireWatchResponse {
  header: WireHeader;
  watch_id?: number | string;
  created?: boolean;
  canceled?: boolean;
  compact_revision?: number | string;
  cancel_reason?: string;
  fragment?: boolean;
  /** Events as objects, or as the bytes of {@link encodeEvent} (shared by every watcher). */
  events?: readonly (WireEvent | Buffer)[];
}

function eventBody(e: WireEvent): void {
  out.int(1, e.type);
  kv(2, e.kv);
  kv(3, e.prev_kv);
}

function watchBody(r: WireWatchResponse): void {
  header(1, r.header);
  out.int(2, r.watch_id ?? 0);
  out.bool(3, r.created === true);
  out.bool(4, r.canceled === true);
  out.int(5, r.compact_revision ?? 0);
  out.string(6, r.cancel_reason);
  out.bool(7, r.fragment === true);
  for (const e of r.events ?? []) {
    if (Buffer.isBuffer(e)) out.raw(11, e);
    else nested(11, e, eventBody);
  }
}

/**
 * One watch event encoded once (an `mvccpb.Event` message), to be shared by every watcher it goes
 * to: a WatchResponse whose `events` holds these Buffers copies them instead of encoding again.
 */
export function encodeEvent(e: WireEvent): Buffer {
  eventBody(e);
  return out.take();
}

/** The encoder of WatchResponse (events as objects or as {@link encodeEvent} bytes). */
export const encodeWatchResponse = (r: unknown): Buffer => (watchBody(r as WireWatchResponse), out.take());

/** Encoders of the response objects the KV handlers return (loader form). */
export const encodeResponse = {
  Range: (r: unknown): Buffer => (rangeBody(r as WireRangeResponse), out.take()),
  Put: (r: unknown): Buffer => (putBody(r as WirePutResponse), out.take()),
  DeleteRange: (r: unknown): Buffer => (deleteBody(r as WireDeleteResponse), out.take()),
  Txn: (r: unknown): Buffer => (txnBody(r as WireTxnResponse), out.take()),
};

/** The same encoders writing gRPC messages (prefix included), so the transport copies nothing. */
const framed = new Map<(r: unknown) => Buffer, (r: unknown) => Buffer>([
  [encodeResponse.Range, (r) => (rangeBody(r as WireRangeResponse), out.takeFramed())],
  [encodeResponse.Put, (r) => (putBody(r as WirePutResponse), out.takeFramed())],
  [encodeResponse.DeleteRange, (r) => (deleteBody(r as WireDeleteResponse), out.takeFramed())],
  [encodeResponse.Txn, (r) => (txnBody(r as WireTxnResponse), out.takeFramed())],
  [encodeWatchResponse, (r) => (watchBody(r as WireWatchResponse), out.takeFramed())],
]);

/** The encoder of gRPC messages (prefix included) that goes with one of the encoders above. */
export function framedEncoderOf(serialize: (r: unknown) => Buffer): (r: unknown) => Buffer {
  const encode = framed.get(serialize);
  if (encode === undefined) throw new Error('framedEncoderOf: not an encoder of wire.ts');
  return encode;
}

/** One empty Buffer for every unset bytes field (a zero-length Buffer cannot be changed). */
const EMPTY_BYTES = Buffer.alloc(0);
const EMPTY = (): Buffer => EMPTY_BYTES;

function rangeRequest(r: In): Record<string, unknown> {
  const m: Record<string, unknown> = {
    key: EMPTY(),
    range_end: EMPTY(),
    limit: '0',
    revision: '0',
    sort_order: 0,
    sort_target: 0,
    serializable: false,
    keys_only: false,
    count_only: false,
    min_mod_revision: '0',
    max_mod_revision: '0',
    min_create_revision: '0',
    max_create_revision: '0',
  };
  while (r.pos < r.end) {
    const tag = r.uint();
    switch (tag) {
      case 10:
        m.key = r.bytes();
        break;
      case 18:
        m.range_end = r.bytes();
        break;
      case 24:
        m.limit = r.int64();
        break;
      case 32:
        m.revision = r.int64();
        break;
      case 40:
        m.sort_order = r.enum();
        break;
      case 48:
        m.sort_target = r.enum();
        break;
      case 56:
        m.serializable = r.bool();
        break;
      case 64:
        m.keys_only = r.bool();
        break;
      case 72:
        m.count_only = r.bool();
        break;
      case 80:
        m.min_mod_revision = r.int64();
        break;
      case 88:
        m.max_mod_revision = r.int64();
        break;
      case 96:
        m.min_create_revision = r.int64();
        break;
      case 104:
        m.max_create_revision = r.int64();
        break;
      default:
        r.skip(tag & 7);
    }
  }
  return m;
}

function putRequest(r: In): Record<string, unknown> {
  const m: Record<string, unknown> = {
    key: EMPTY(),
    value: EMPTY(),
    lease: '0',
    prev_kv: false,
    ignore_value: false,
    ignore_lease: false,
  };
  while (r.pos < r.end) {
    const tag = r.uint();
    switch (tag) {
      case 10:
        m.key = r.bytes();
        break;
      case 18:
        m.value = r.bytes();
        break;
      case 24:
        m.lease = r.int64();
        break;
      case 32:
        m.prev_kv = r.bool();
        break;
      case 40:
        m.ignore_value = r.bool();
        break;
      case 48:
        m.ignore_lease = r.bool();
        break;
      default:
        r.skip(tag & 7);
    }
  }
  return m;
}

function deleteRangeRequest(r: In): Record<string, unknown> {
  const m: Record<string, unknown> = { key: EMPTY(), range_end: EMPTY(), prev_kv: false };
  while (r.pos < r.end) {
    const tag = r.uint();
    switch (tag) {
      case 10:
        m.key = r.bytes();
        break;
      case 18:
        m.range_end = r.bytes();
        break;
      case 24:
        m.prev_kv = r.bool();
        break;
      default:
        r.skip(tag & 7);
    }
  }
  return m;
}

const COMPARE_UNION: Record<number, string> = {
  4: 'version',
  5: 'create_revision',
  6: 'mod_revision',
  7: 'value',
  8: 'lease',
};

function compare(r: In): Record<string, unknown> {
  const m: Record<string, unknown> = { result: 0, target: 0, key: EMPTY(), range_end: EMPTY() };
  let union: string | undefined;
  while (r.pos < r.end) {
    const tag = r.uint();
    const field = tag >>> 3;
    const wire = tag & 7;
    if (field === 1 && wire === 0) m.result = r.enum();
    else if (field === 2 && wire === 0) m.target = r.enum();
    else if (field === 3 && wire === 2) m.key = r.bytes();
    else if (field === 64 && wire === 2) m.range_end = r.bytes();
    else if (field === 7 && wire === 2) {
      if (union !== undefined) delete m[union];
      union = 'value';
      m.value = r.bytes();
    } else if (field >= 4 && field <= 8 && wire === 0) {
      if (union !== undefined) delete m[union];
      const name = COMPARE_UNION[field] ?? 'version';
      union = name;
      m[name] = r.int64();
    } else r.skip(wire);
  }
  if (union !== undefined) m.target_union = union;
  return m;
}

const REQUEST_OPS = ['', 'request_range', 'request_put', 'request_delete_range', 'request_txn'] as const;

function requestOp(r: In): Record<string, unknown> {
  const m: Record<string, unknown> = {};
  let which: string | undefined;
  while (r.pos < r.end) {
    const tag = r.uint();
    const field = tag >>> 3;
    if (field >= 1 && field <= 4 && (tag & 7) === 2) {
      const name = REQUEST_OPS[field] as string;
      const sub = r.sub();
      if (which !== undefined && which !== name) delete m[which];
      which = name;
      m[name] =
        field === 1
          ? rangeRequest(sub)
          : field === 2
            ? putRequest(sub)
            : field === 3
              ? deleteRangeRequest(sub)
              : txnRequest(sub);
    } else r.skip(tag & 7);
  }
  if (which !== undefined) m.request = which;
  return m;
}

function txnRequest(r: In): Record<string, unknown> {
  const m = {
    compare: [] as Record<string, unknown>[],
    success: [] as Record<string, unknown>[],
    failure: [] as Record<string, unknown>[],
  };
  while (r.pos < r.end) {
    const tag = r.uint();
    switch (tag) {
      case 10:
        m.compare.push(compare(r.sub()));
        break;
      case 18:
        m.success.push(requestOp(r.sub()));
        break;
      case 26:
        m.failure.push(requestOp(r.sub()));
        break;
      default:
        r.skip(tag & 7);
    }
  }
  return m;
}

const reader = (buf: Buffer): In => new In(buf, 0, buf.length);

/** Decoders of the KV requests into the loader's object form. */
export const decodeRequest = {
  Range: (buf: Buffer): unknown => rangeRequest(reader(buf)),
  Put: (buf: Buffer): unknown => putRequest(reader(buf)),
  DeleteRange: (buf: Buffer): unknown => deleteRangeRequest(reader(buf)),
  Txn: (buf: Buffer): unknown => txnRequest(reader(buf)),
};
