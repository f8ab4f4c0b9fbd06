/**
 * The etcd client's protobuf codecs, written by hand: requests encoded, responses decoded, for the
 * RPCs the engine makes (KV Range/Put/DeleteRange/Txn/Compact, Watch, Lease Grant/Revoke/KeepAlive/
 * TimeToLive, Auth Authenticate, Maintenance Status).
 *
 * Why by hand: protobufjs with `@grpc/proto-loader` parses etcd's `rpc.proto` at import and keeps the
 * reflection tree, about 7–12 MB of an agent's RSS with `etcd3` and `@grpc/grpc-js` (docs/agent.md,
 * "Memory"). The objects keep the loader's shape (`keepCase`: field names as in the `.proto`; int64s
 * decoded as decimal strings, as `longs: String`; every scalar present with its default; enums as
 * numbers), so the engine reads them as it read etcd3's. test/store/etcd-rpc-codec.test.ts checks
 * both directions against protobufjs on random messages. Field numbers: etcd's `rpc.proto` and
 * `kv.proto`; the message types are in rpc-messages.ts.
 */
import { GRPC_PREFIX, ProtoReader, ProtoWriter } from '../../util/protobuf.js';
import {
  type AuthenticateRequest,
  type AuthenticateResponse,
  type CompactionRequest,
  type Compare,
  type DeleteRangeRequest,
  type DeleteRangeResponse,
  type Event,
  type HeaderOnlyResponse,
  type Int64,
  type KeyValue,
  type LeaseGrantRequest,
  type LeaseGrantResponse,
  type LeaseIdRequest,
  type LeaseKeepAliveResponse,
  type LeaseTimeToLiveRequest,
  type LeaseTimeToLiveResponse,
  type PutRequest,
  type PutResponse,
  type RangeRequest,
  type RangeResponse,
  type RequestOp,
  type ResponseHeader,
  type ResponseOp,
  type StatusResponse,
  type TxnRequest,
  type TxnResponse,
  type WatchCreateRequest,
  type WatchRequest,
  type WatchResponse,
} from './rpc-messages.js';

export * from './rpc-messages.js';

// ---- encoding -----------------------------------------------------------------------------------

/** One writer for the module: messages are encoded synchronously, one at a time. */
const out = new ProtoWriter();

function nested<T>(field: number, value: T, body: (v: T) => void): void {
  const at = out.begin(field);
  body(value);
  out.end(at);
}

function rangeBody(r: RangeRequest): void {
  out.bytes(1, r.key);
  out.bytes(2, r.range_end);
  out.int(3, r.limit ?? 0);
  out.int(4, r.revision ?? 0);
  out.bool(7, r.serializable === true);
  out.bool(8, r.keys_only === true);
  out.bool(9, r.count_only === true);
}
function putBody(r: PutRequest): void {
  out.bytes(1, r.key);
  out.bytes(2, r.value);
  out.int(3, r.lease ?? 0);
  out.bool(4, r.prev_kv === true);
  out.bool(5, r.ignore_value === true);
  out.bool(6, r.ignore_lease === true);
}
function deleteBody(r: DeleteRangeRequest): void {
  out.bytes(1, r.key);
  out.bytes(2, r.range_end);
  out.bool(3, r.prev_kv === true);
}
/** A oneof member is written even when it holds its default (the oneof records which one is set). */
function oneofInt(field: number, v: Int64): void {
  out.varint(field << 3);
  out.varint64(v);
}
function compareBody(c: Compare): void {
  out.int(1, c.result);
  out.int(2, c.target);
  out.bytes(3, c.key);
  if (c.version !== undefined) oneofInt(4, c.version);
  else if (c.create_revision !== undefined) oneofInt(5, c.create_revision);
  else if (c.mod_revision !== undefined) oneofInt(6, c.mod_revision);
  else if (c.value !== undefined) {
    out.varint((7 << 3) | 2);
    out.varint(c.value.length);
    out.room(c.value.length);
    out.buf.set(c.value, out.pos);
    out.pos += c.value.length;
  } else if (c.lease !== undefined) oneofInt(8, c.lease);
  out.bytes(64, c.range_end);
}
function requestOpBody(op: RequestOp): void {
  if (op.request_range !== undefined) nested(1, op.request_range, rangeBody);
  else if (op.request_put !== undefined) nested(2, op.request_put, putBody);
  else if (op.request_delete_range !== undefined) nested(3, op.request_delete_range, deleteBody);
  else if (op.request_txn !== undefined) nested(4, op.request_txn, txnBody);
}
function txnBody(r: TxnRequest): void {
  for (const c of r.compare) nested(1, c, compareBody);
  for (const op of r.success) nested(2, op, requestOpBody);
  for (const op of r.failure) nested(3, op, requestOpBody);
}
function watchCreateBody(r: WatchCreateRequest): void {
  out.bytes(1, r.key);
  out.bytes(2, r.range_end);
  out.int(3, r.start_revision ?? 0);
  out.bool(4, r.progress_notify === true);
  out.bool(6, r.prev_kv === true);
  out.int(7, r.watch_id ?? 0);
  out.bool(8, r.fragment === true);
}
function watchBody(r: WatchRequest): void {
  if (r.create_request !== undefined) nested(1, r.create_request, watchCreateBody);
  else if (r.cancel_request !== undefined) nested(2, r.cancel_request, (c) => out.int(1, c.watch_id));
  else if (r.progress_request !== undefined) nested(3, r.progress_request, () => undefined);
}

const take =
  <T>(body: (r: T) => void) =>
  (r: T): Buffer => {
    body(r);
    return out.takeFramed();
  };

/** Encoders of the request messages, as gRPC messages (prefix included). */
export const encode = {
  range: take(rangeBody),
  put: take(putBody),
  deleteRange: take(deleteBody),
  txn: take(txnBody),
  compact: take((r: CompactionRequest) => {
    out.int(1, r.revision);
    out.bool(2, r.physical === true);
  }),
  watch: take(watchBody),
  leaseGrant: take((r: LeaseGrantRequest) => {
    out.int(1, r.TTL);
    out.int(2, r.ID ?? 0);
  }),
  /** LeaseRevokeRequest and LeaseKeepAliveRequest: `ID = 1`. */
  leaseId: take((r: LeaseIdRequest) => out.int(1, r.ID)),
  leaseTimeToLive: take((r: LeaseTimeToLiveRequest) => {
    out.int(1, r.ID);
    out.bool(2, r.keys === true);
  }),
  authenticate: take((r: AuthenticateRequest) => {
    out.string(1, r.name);
    out.string(2, r.password);
  }),
  /** StatusRequest has no fields. */
  empty: (): Buffer => Buffer.alloc(GRPC_PREFIX),
};

// ---- decoding -----------------------------------------------------------------------------------

/** One empty Buffer for every unset bytes field (a zero-length Buffer cannot be changed). */
const EMPTY_BYTES = Buffer.alloc(0);

function header(r: ProtoReader): ResponseHeader {
  const h: ResponseHeader = { cluster_id: '0', member_id: '0', revision: '0', raft_term: '0' };
  while (r.pos < r.end) {
    const tag = r.uint();
    switch (tag) {
      case 8:
        h.cluster_id = uint64(r);
        break;
      case 16:
        h.member_id = uint64(r);
        break;
      case 24:
        h.revision = r.int64();
        break;
      case 32:
        h.raft_term = uint64(r);
        break;
      default:
        r.skip(tag & 7);
    }
  }
  return h;
}

/** A uint64 as a decimal string (cluster and member ids use all 64 bits). */
function uint64(r: ProtoReader): string {
  const s = r.int64();
  return s.startsWith('-') ? BigInt.asUintN(64, BigInt(s)).toString() : s;
}

function keyValue(r: ProtoReader): KeyValue {
  const kv: KeyValue = {
    key: EMPTY_BYTES,
    create_revision: '0',
    mod_revision: '0',
    version: '0',
    value: EMPTY_BYTES,
    lease: '0',
  };
  while (r.pos < r.end) {
    const tag = r.uint();
    switch (tag) {
      case 10:
        kv.key = r.bytes();
        break;
      case 16:
        kv.create_revision = r.int64();
        break;
      case 24:
        kv.mod_revision = r.int64();
        break;
      case 32:
        kv.version = r.int64();
        break;
      case 42:
        kv.value = r.bytes();
        break;
      case 48:
        kv.lease = r.int64();
        break;
      default:
        r.skip(tag & 7);
    }
  }
  return kv;
}

function rangeResponse(r: ProtoReader): RangeResponse {
  const m: RangeResponse = { header: null, kvs: [], more: false, count: '0' };
  while (r.pos < r.end) {
    const tag = r.uint();
    switch (tag) {
      case 10:
        m.header = header(r.sub());
        break;
      case 18:
        m.kvs.push(keyValue(r.sub()));
        break;
      case 24:
        m.more = r.bool();
        break;
      case 32:
        m.count = r.int64();
        break;
      default:
        r.skip(tag & 7);
    }
  }
  return m;
}

function putResponse(r: ProtoReader): PutResponse {
  const m: PutResponse = { header: null, prev_kv: null };
  while (r.pos < r.end) {
    const tag = r.uint();
    if (tag === 10) m.header = header(r.sub());
    else if (tag === 18) m.prev_kv = keyValue(r.sub());
    else r.skip(tag & 7);
  }
  return m;
}

function deleteRangeResponse(r: ProtoReader): DeleteRangeResponse {
  const m: DeleteRangeResponse = { header: null, deleted: '0', prev_kvs: [] };
  while (r.pos < r.end) {
    const tag = r.uint();
    if (tag === 10) m.header = header(r.sub());
    else if (tag === 16) m.deleted = r.int64();
    else if (tag === 26) m.prev_kvs.push(keyValue(r.sub()));
    else r.skip(tag & 7);
  }
  return m;
}

function responseOp(r: ProtoReader): ResponseOp {
  const m: ResponseOp = {};
  while (r.pos < r.end) {
    const tag = r.uint();
    // A oneof: the last member on the wire wins.
    if (tag === 10) replaceOneof(m, { response_range: rangeResponse(r.sub()) });
    else if (tag === 18) replaceOneof(m, { response_put: putResponse(r.sub()) });
    else if (tag === 26) replaceOneof(m, { response_delete_range: deleteRangeResponse(r.sub()) });
    else if (tag === 34) replaceOneof(m, { response_txn: txnResponse(r.sub()) });
    else r.skip(tag & 7);
  }
  return m;
}

function replaceOneof(m: ResponseOp, member: ResponseOp): void {
  delete m.response_range;
  delete m.response_put;
  delete m.response_delete_range;
  delete m.response_txn;
  Object.assign(m, member);
}

function txnResponse(r: ProtoReader): TxnResponse {
  const m: TxnResponse = { header: null, succeeded: false, responses: [] };
  while (r.pos < r.end) {
    const tag = r.uint();
    if (tag === 10) m.header = header(r.sub());
    else if (tag === 16) m.succeeded = r.bool();
    else if (tag === 26) m.responses.push(responseOp(r.sub()));
    else r.skip(tag & 7);
  }
  return m;
}

function headerOnly(r: ProtoReader): HeaderOnlyResponse {
  const m: HeaderOnlyResponse = { header: null };
  while (r.pos < r.end) {
    const tag = r.uint();
    if (tag === 10) m.header = header(r.sub());
    else r.skip(tag & 7);
  }
  return m;
}

function event(r: ProtoReader): Event {
  const e: Event = { type: 0, kv: null, prev_kv: null };
  while (r.pos < r.end) {
    const tag = r.uint();
    if (tag === 8) e.type = r.enum();
    else if (tag === 18) e.kv = keyValue(r.sub());
    else if (tag === 26) e.prev_kv = keyValue(r.sub());
    else r.skip(tag & 7);
  }
  return e;
}

function watchResponse(r: ProtoReader): WatchResponse {
  const m: WatchResponse = {
    header: null,
    watch_id: '0',
    created: false,
    canceled: false,
    compact_revision: '0',
    cancel_reason: '',
    fragment: false,
    events: [],
  };
  while (r.pos < r.end) {
    const tag = r.uint();
    switch (tag) {
      case 10:
        m.header = header(r.sub());
        break;
      case 16:
        m.watch_id = r.int64();
        break;
      case 24:
        m.created = r.bool();
        break;
      case 32:
        m.canceled = r.bool();
        break;
      case 40:
        m.compact_revision = r.int64();
        break;
      case 50:
        m.cancel_reason = r.string();
        break;
      case 56:
        m.fragment = r.bool();
        break;
      case 90:
        m.events.push(event(r.sub()));
        break;
      default:
        r.skip(tag & 7);
    }
  }
  return m;
}

function leaseGrantResponse(r: ProtoReader): LeaseGrantResponse {
  const m: LeaseGrantResponse = { header: null, ID: '0', TTL: '0', error: '' };
  while (r.pos < r.end) {
    const tag = r.uint();
    if (tag === 10) m.header = header(r.sub());
    else if (tag === 16) m.ID = r.int64();
    else if (tag === 24) m.TTL = r.int64();
    else if (tag === 34) m.error = r.string();
    else r.skip(tag & 7);
  }
  return m;
}

function leaseKeepAliveResponse(r: ProtoReader): LeaseKeepAliveResponse {
  const m: LeaseKeepAliveResponse = { header: null, ID: '0', TTL: '0' };
  while (r.pos < r.end) {
    const tag = r.uint();
    if (tag === 10) m.header = header(r.sub());
    else if (tag === 16) m.ID = r.int64();
    else if (tag === 24) m.TTL = r.int64();
    else r.skip(tag & 7);
  }
  return m;
}

function leaseTimeToLiveResponse(r: ProtoReader): LeaseTimeToLiveResponse {
  const m: LeaseTimeToLiveResponse = { header: null, ID: '0', TTL: '0', grantedTTL: '0', keys: [] };
  while (r.pos < r.end) {
    const tag = r.uint();
    if (tag === 10) m.header = header(r.sub());
    else if (tag === 16) m.ID = r.int64();
    else if (tag === 24) m.TTL = r.int64();
    else if (tag === 32) m.grantedTTL = r.int64();
    else if (tag === 42) m.keys.push(r.bytes());
    else r.skip(tag & 7);
  }
  return m;
}

function authenticateResponse(r: ProtoReader): AuthenticateResponse {
  const m: AuthenticateResponse = { header: null, token: '' };
  while (r.pos < r.end) {
    const tag = r.uint();
    if (tag === 10) m.header = header(r.sub());
    else if (tag === 18) m.token = r.string();
    else r.skip(tag & 7);
  }
  return m;
}

function statusResponse(r: ProtoReader): StatusResponse {
  const m: StatusResponse = { header: null, version: '' };
  while (r.pos < r.end) {
    const tag = r.uint();
    if (tag === 10) m.header = header(r.sub());
    else if (tag === 18) m.version = r.string();
    else r.skip(tag & 7);
  }
  return m;
}

const from =
  <T>(body: (r: ProtoReader) => T) =>
  (buf: Buffer): T =>
    body(new ProtoReader(buf, 0, buf.length));

/** Decoders of the response messages (bytes values share the message's memory). */
export const decode = {
  range: from(rangeResponse),
  put: from(putResponse),
  deleteRange: from(deleteRangeResponse),
  txn: from(txnResponse),
  /** CompactionResponse, LeaseRevokeResponse: only a header. */
  headerOnly: from(headerOnly),
  watch: from(watchResponse),
  leaseGrant: from(leaseGrantResponse),
  leaseKeepAlive: from(leaseKeepAliveResponse),
  leaseTimeToLive: from(leaseTimeToLiveResponse),
  authenticate: from(authenticateResponse),
  status: from(statusResponse),
};
