/**
 * The etcd v3 messages muster serve reads and writes, as a table: for each message its fields
 * (number, name as in etcd's `.proto`, type), for each enum its values by number with the names
 * etcd's JSON gateway writes. proto-codec.ts encodes, decodes and converts to and from JSON by this
 * table, so serve needs no `.proto` file and no protobuf library at run time.
 *
 * Source: etcd 3.4's `etcdserverpb/rpc.proto`, `mvccpb/kv.proto` and `authpb/auth.proto` (the
 * files the `etcd3` package ships); only the messages of the RPCs serve implements are listed.
 * `test/server/serve-proto-codec.test.ts` checks every entry against those files and the codec
 * against protobufjs on random messages.
 */

/** A scalar type of the wire format, as the `.proto` names it. */
export type ScalarType = 'int64' | 'uint64' | 'int32' | 'uint32' | 'bool' | 'string' | 'bytes';

/**
 * One field: `[number, name, type]` plus `'repeated'` or the name of its oneof. `type` is a scalar
 * type, the name of an enum in {@link ENUMS} or of a message in {@link MESSAGES}.
 */
export type FieldDecl = readonly [number, string, string, ('repeated' | `oneof:${string}`)?];

/** Enum values by number, named as etcd's grpc-gateway writes them (`NOT_EQUAL`, `PUT`). */
export const ENUMS: Readonly<Record<string, readonly string[]>> = {
  'Event.EventType': ['PUT', 'DELETE'],
  'RangeRequest.SortOrder': ['NONE', 'ASCEND', 'DESCEND'],
  'RangeRequest.SortTarget': ['KEY', 'VERSION', 'CREATE', 'MOD', 'VALUE'],
  'Compare.CompareResult': ['EQUAL', 'GREATER', 'LESS', 'NOT_EQUAL'],
  'Compare.CompareTarget': ['VERSION', 'CREATE', 'MOD', 'VALUE', 'LEASE'],
  'WatchCreateRequest.FilterType': ['NOPUT', 'NODELETE'],
  AlarmType: ['NONE', 'NOSPACE', 'CORRUPT'],
  'AlarmRequest.AlarmAction': ['GET', 'ACTIVATE', 'DEACTIVATE'],
  'Permission.Type': ['READ', 'WRITE', 'READWRITE'],
};

const HEADER: FieldDecl = [1, 'header', 'ResponseHeader'];
/** A response that carries only the header. */
const HEADER_ONLY: readonly FieldDecl[] = [HEADER];

/** Messages by name (etcdserverpb's without a package; mvccpb's and authpb's by their short name). */
export const MESSAGES: Readonly<Record<string, readonly FieldDecl[]>> = {
  ResponseHeader: [
    [1, 'cluster_id', 'uint64'],
    [2, 'member_id', 'uint64'],
    [3, 'revision', 'int64'],
    [4, 'raft_term', 'uint64'],
  ],
  // mvccpb
  KeyValue: [
    [1, 'key', 'bytes'],
    [2, 'create_revision', 'int64'],
    [3, 'mod_revision', 'int64'],
    [4, 'version', 'int64'],
    [5, 'value', 'bytes'],
    [6, 'lease', 'int64'],
  ],
  Event: [
    [1, 'type', 'Event.EventType'],
    [2, 'kv', 'KeyValue'],
    [3, 'prev_kv', 'KeyValue'],
  ],
  // authpb
  UserAddOptions: [[1, 'no_password', 'bool']],
  Permission: [
    [1, 'permType', 'Permission.Type'],
    [2, 'key', 'bytes'],
    [3, 'range_end', 'bytes'],
  ],

  // KV
  RangeRequest: [
    [1, 'key', 'bytes'],
    [2, 'range_end', 'bytes'],
    [3, 'limit', 'int64'],
    [4, 'revision', 'int64'],
    [5, 'sort_order', 'RangeRequest.SortOrder'],
    [6, 'sort_target', 'RangeRequest.SortTarget'],
    [7, 'serializable', 'bool'],
    [8, 'keys_only', 'bool'],
    [9, 'count_only', 'bool'],
    [10, 'min_mod_revision', 'int64'],
    [11, 'max_mod_revision', 'int64'],
    [12, 'min_create_revision', 'int64'],
    [13, 'max_create_revision', 'int64'],
  ],
  RangeResponse: [HEADER, [2, 'kvs', 'KeyValue', 'repeated'], [3, 'more', 'bool'], [4, 'count', 'int64']],
  PutRequest: [
    [1, 'key', 'bytes'],
    [2, 'value', 'bytes'],
    [3, 'lease', 'int64'],
    [4, 'prev_kv', 'bool'],
    [5, 'ignore_value', 'bool'],
    [6, 'ignore_lease', 'bool'],
  ],
  PutResponse: [HEADER, [2, 'prev_kv', 'KeyValue']],
  DeleteRangeRequest: [
    [1, 'key', 'bytes'],
    [2, 'range_end', 'bytes'],
    [3, 'prev_kv', 'bool'],
  ],
  DeleteRangeResponse: [HEADER, [2, 'deleted', 'int64'], [3, 'prev_kvs', 'KeyValue', 'repeated']],
  RequestOp: [
    [1, 'request_range', 'RangeRequest', 'oneof:request'],
    [2, 'request_put', 'PutRequest', 'oneof:request'],
    [3, 'request_delete_range', 'DeleteRangeRequest', 'oneof:request'],
    [4, 'request_txn', 'TxnRequest', 'oneof:request'],
  ],
  ResponseOp: [
    [1, 'response_range', 'RangeResponse', 'oneof:response'],
    [2, 'response_put', 'PutResponse', 'oneof:response'],
    [3, 'response_delete_range', 'DeleteRangeResponse', 'oneof:response'],
    [4, 'response_txn', 'TxnResponse', 'oneof:response'],
  ],
  Compare: [
    [1, 'result', 'Compare.CompareResult'],
    [2, 'target', 'Compare.CompareTarget'],
    [3, 'key', 'bytes'],
    [4, 'version', 'int64', 'oneof:target_union'],
    [5, 'create_revision', 'int64', 'oneof:target_union'],
    [6, 'mod_revision', 'int64', 'oneof:target_union'],
    [7, 'value', 'bytes', 'oneof:target_union'],
    [8, 'lease', 'int64', 'oneof:target_union'],
    [64, 'range_end', 'bytes'],
  ],
  TxnRequest: [
    [1, 'compare', 'Compare', 'repeated'],
    [2, 'success', 'RequestOp', 'repeated'],
    [3, 'failure', 'RequestOp', 'repeated'],
  ],
  TxnResponse: [HEADER, [2, 'succeeded', 'bool'], [3, 'responses', 'ResponseOp', 'repeated']],
  CompactionRequest: [
    [1, 'revision', 'int64'],
    [2, 'physical', 'bool'],
  ],
  CompactionResponse: HEADER_ONLY,

  // Watch
  WatchRequest: [
    [1, 'create_request', 'WatchCreateRequest', 'oneof:request_union'],
    [2, 'cancel_request', 'WatchCancelRequest', 'oneof:request_union'],
    [3, 'progress_request', 'WatchProgressRequest', 'oneof:request_union'],
  ],
  WatchCreateRequest: [
    [1, 'key', 'bytes'],
    [2, 'range_end', 'bytes'],
    [3, 'start_revision', 'int64'],
    [4, 'progress_notify', 'bool'],
    [5, 'filters', 'WatchCreateRequest.FilterType', 'repeated'],
    [6, 'prev_kv', 'bool'],
    [7, 'watch_id', 'int64'],
    [8, 'fragment', 'bool'],
  ],
  WatchCancelRequest: [[1, 'watch_id', 'int64']],
  WatchProgressRequest: [],
  WatchResponse: [
    HEADER,
    [2, 'watch_id', 'int64'],
    [3, 'created', 'bool'],
    [4, 'canceled', 'bool'],
    [5, 'compact_revision', 'int64'],
    [6, 'cancel_reason', 'string'],
    [7, 'fragment', 'bool'],
    [11, 'events', 'Event', 'repeated'],
  ],

  // Lease
  LeaseGrantRequest: [
    [1, 'TTL', 'int64'],
    [2, 'ID', 'int64'],
  ],
  LeaseGrantResponse: [HEADER, [2, 'ID', 'int64'], [3, 'TTL', 'int64'], [4, 'error', 'string']],
  LeaseRevokeRequest: [[1, 'ID', 'int64']],
  LeaseRevokeResponse: HEADER_ONLY,
  LeaseKeepAliveRequest: [[1, 'ID', 'int64']],
  LeaseKeepAliveResponse: [HEADER, [2, 'ID', 'int64'], [3, 'TTL', 'int64']],
  LeaseTimeToLiveRequest: [
    [1, 'ID', 'int64'],
    [2, 'keys', 'bool'],
  ],
  LeaseTimeToLiveResponse: [
    HEADER,
    [2, 'ID', 'int64'],
    [3, 'TTL', 'int64'],
    [4, 'grantedTTL', 'int64'],
    [5, 'keys', 'bytes', 'repeated'],
  ],
  LeaseLeasesRequest: [],
  LeaseStatus: [[1, 'ID', 'int64']],
  LeaseLeasesResponse: [HEADER, [2, 'leases', 'LeaseStatus', 'repeated']],

  // Cluster
  Member: [
    [1, 'ID', 'uint64'],
    [2, 'name', 'string'],
    [3, 'peerURLs', 'string', 'repeated'],
    [4, 'clientURLs', 'string', 'repeated'],
    [5, 'isLearner', 'bool'],
  ],
  MemberListRequest: [[1, 'linearizable', 'bool']],
  MemberListResponse: [HEADER, [2, 'members', 'Member', 'repeated']],

  // Maintenance
  StatusRequest: [],
  StatusResponse: [
    HEADER,
    [2, 'version', 'string'],
    [3, 'dbSize', 'int64'],
    [4, 'leader', 'uint64'],
    [5, 'raftIndex', 'uint64'],
    [6, 'raftTerm', 'uint64'],
    [7, 'raftAppliedIndex', 'uint64'],
    [8, 'errors', 'string', 'repeated'],
    [9, 'dbSizeInUse', 'int64'],
    [10, 'isLearner', 'bool'],
  ],
  AlarmRequest: [
    [1, 'action', 'AlarmRequest.AlarmAction'],
    [2, 'memberID', 'uint64'],
    [3, 'alarm', 'AlarmType'],
  ],
  AlarmMember: [
    [1, 'memberID', 'uint64'],
    [2, 'alarm', 'AlarmType'],
  ],
  AlarmResponse: [HEADER, [2, 'alarms', 'AlarmMember', 'repeated']],
  HashRequest: [],
  HashResponse: [HEADER, [2, 'hash', 'uint32']],
  HashKVRequest: [[1, 'revision', 'int64']],
  HashKVResponse: [HEADER, [2, 'hash', 'uint32'], [3, 'compact_revision', 'int64']],
  DefragmentRequest: [],
  DefragmentResponse: HEADER_ONLY,
  SnapshotRequest: [],
  SnapshotResponse: [HEADER, [2, 'remaining_bytes', 'uint64'], [3, 'blob', 'bytes']],

  // Auth
  AuthEnableRequest: [],
  AuthEnableResponse: HEADER_ONLY,
  AuthDisableRequest: [],
  AuthDisableResponse: HEADER_ONLY,
  AuthStatusRequest: [],
  AuthStatusResponse: [HEADER, [2, 'enabled', 'bool'], [3, 'authRevision', 'uint64']],
  AuthenticateRequest: [
    [1, 'name', 'string'],
    [2, 'password', 'string'],
  ],
  AuthenticateResponse: [HEADER, [2, 'token', 'string']],
  AuthUserAddRequest: [
    [1, 'name', 'string'],
    [2, 'password', 'string'],
    [3, 'options', 'UserAddOptions'],
  ],
  AuthUserAddResponse: HEADER_ONLY,
  AuthUserGetRequest: [[1, 'name', 'string']],
  AuthUserGetResponse: [HEADER, [2, 'roles', 'string', 'repeated']],
  AuthUserListRequest: [],
  AuthUserListResponse: [HEADER, [2, 'users', 'string', 'repeated']],
  AuthUserDeleteRequest: [[1, 'name', 'string']],
  AuthUserDeleteResponse: HEADER_ONLY,
  AuthUserChangePasswordRequest: [
    [1, 'name', 'string'],
    [2, 'password', 'string'],
  ],
  AuthUserChangePasswordResponse: HEADER_ONLY,
  AuthUserGrantRoleRequest: [
    [1, 'user', 'string'],
    [2, 'role', 'string'],
  ],
  AuthUserGrantRoleResponse: HEADER_ONLY,
  AuthUserRevokeRoleRequest: [
    [1, 'name', 'string'],
    [2, 'role', 'string'],
  ],
  AuthUserRevokeRoleResponse: HEADER_ONLY,
  AuthRoleAddRequest: [[1, 'name', 'string']],
  AuthRoleAddResponse: HEADER_ONLY,
  AuthRoleGetRequest: [[1, 'role', 'string']],
  AuthRoleGetResponse: [HEADER, [2, 'perm', 'Permission', 'repeated']],
  AuthRoleListRequest: [],
  AuthRoleListResponse: [HEADER, [2, 'roles', 'string', 'repeated']],
  AuthRoleDeleteRequest: [[1, 'role', 'string']],
  AuthRoleDeleteResponse: HEADER_ONLY,
  AuthRoleGrantPermissionRequest: [
    [1, 'name', 'string'],
    [2, 'perm', 'Permission'],
  ],
  AuthRoleGrantPermissionResponse: HEADER_ONLY,
  AuthRoleRevokePermissionRequest: [
    [1, 'role', 'string'],
    [2, 'key', 'bytes'],
    [3, 'range_end', 'bytes'],
  ],
  AuthRoleRevokePermissionResponse: HEADER_ONLY,
};
