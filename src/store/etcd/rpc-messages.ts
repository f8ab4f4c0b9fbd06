/**
 * The etcd messages the client sends and receives, in the objects rpc-codec.ts encodes and decodes:
 * field names as in etcd's `rpc.proto` and `kv.proto`, int64s decoded as decimal strings (taken as a
 * number or a string on the way out), every scalar of a decoded message present with its default,
 * enums as numbers. Only the fields the engine uses are declared for requests.
 */
/** int64 / uint64 on the way out: a safe integer or a decimal string (lease ids exceed 2^53). */
export type Int64 = number | string;

export interface ResponseHeader {
  cluster_id: string;
  member_id: string;
  revision: string;
  raft_term: string;
}

export interface KeyValue {
  key: Buffer;
  create_revision: string;
  mod_revision: string;
  version: string;
  value: Buffer;
  lease: string;
}

export interface RangeRequest {
  key: Uint8Array;
  range_end?: Uint8Array;
  limit?: Int64;
  revision?: Int64;
  serializable?: boolean;
  keys_only?: boolean;
  count_only?: boolean;
}
export interface RangeResponse {
  header: ResponseHeader | null;
  kvs: KeyValue[];
  more: boolean;
  count: string;
}

export interface PutRequest {
  key: Uint8Array;
  value?: Uint8Array;
  lease?: Int64;
  prev_kv?: boolean;
  ignore_value?: boolean;
  ignore_lease?: boolean;
}
export interface PutResponse {
  header: ResponseHeader | null;
  prev_kv: KeyValue | null;
}

export interface DeleteRangeRequest {
  key: Uint8Array;
  range_end?: Uint8Array;
  prev_kv?: boolean;
}
export interface DeleteRangeResponse {
  header: ResponseHeader | null;
  deleted: string;
  prev_kvs: KeyValue[];
}

/** `Compare.CompareResult`. */
export const CompareResult = { EQUAL: 0, GREATER: 1, LESS: 2, NOT_EQUAL: 3 } as const;
/** `Compare.CompareTarget`. */
export const CompareTarget = { VERSION: 0, CREATE: 1, MOD: 2, VALUE: 3, LEASE: 4 } as const;

export interface Compare {
  result: number;
  target: number;
  key: Uint8Array;
  range_end?: Uint8Array;
  /** The oneof `target_union`: exactly one of these, matching `target`. */
  version?: Int64;
  create_revision?: Int64;
  mod_revision?: Int64;
  value?: Uint8Array;
  lease?: Int64;
}

export interface RequestOp {
  request_range?: RangeRequest;
  request_put?: PutRequest;
  request_delete_range?: DeleteRangeRequest;
  request_txn?: TxnRequest;
}
export interface TxnRequest {
  compare: readonly Compare[];
  success: readonly RequestOp[];
  failure: readonly RequestOp[];
}
export interface ResponseOp {
  response_range?: RangeResponse;
  response_put?: PutResponse;
  response_delete_range?: DeleteRangeResponse;
  response_txn?: TxnResponse;
}
export interface TxnResponse {
  header: ResponseHeader | null;
  succeeded: boolean;
  responses: ResponseOp[];
}

export interface CompactionRequest {
  revision: Int64;
  physical?: boolean;
}
export interface HeaderOnlyResponse {
  header: ResponseHeader | null;
}

export interface WatchCreateRequest {
  key: Uint8Array;
  range_end?: Uint8Array;
  start_revision?: Int64;
  progress_notify?: boolean;
  prev_kv?: boolean;
  watch_id?: Int64;
  fragment?: boolean;
}
export interface WatchRequest {
  create_request?: WatchCreateRequest;
  cancel_request?: { watch_id: Int64 };
  progress_request?: Record<string, never>;
}
/** `mvccpb.Event.EventType`. */
export const EventType = { PUT: 0, DELETE: 1 } as const;
export interface Event {
  type: number;
  kv: KeyValue | null;
  prev_kv: KeyValue | null;
}
export interface WatchResponse {
  header: ResponseHeader | null;
  watch_id: string;
  created: boolean;
  canceled: boolean;
  compact_revision: string;
  cancel_reason: string;
  fragment: boolean;
  events: Event[];
}

export interface LeaseGrantRequest {
  TTL: Int64;
  ID?: Int64;
}
export interface LeaseGrantResponse {
  header: ResponseHeader | null;
  ID: string;
  TTL: string;
  error: string;
}
export interface LeaseIdRequest {
  ID: Int64;
}
export interface LeaseKeepAliveResponse {
  header: ResponseHeader | null;
  ID: string;
  TTL: string;
}
export interface LeaseTimeToLiveRequest {
  ID: Int64;
  keys?: boolean;
}
export interface LeaseTimeToLiveResponse {
  header: ResponseHeader | null;
  ID: string;
  TTL: string;
  grantedTTL: string;
  keys: Buffer[];
}

export interface AuthenticateRequest {
  name: string;
  password: string;
}
export interface AuthenticateResponse {
  header: ResponseHeader | null;
  token: string;
}
export interface StatusResponse {
  header: ResponseHeader | null;
  version: string;
}
