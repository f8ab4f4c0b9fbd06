/**
 * The etcd v3 RPCs muster serve implements, each with its path, streaming kind and codecs: the
 * hand-written ones of wire.ts for the hot KV RPCs and WatchResponse, proto-codec.ts (by the table
 * in schema.ts) for the rest. Nothing is loaded or parsed at start; an RPC not listed here answers
 * UNIMPLEMENTED.
 */
import { decodeMessage, encodeMessage } from './proto-codec.js';
import { decodeRequest, encodeResponse, encodeWatchResponse, framedEncoderOf } from './wire.js';

/** One RPC as the transport and the gateway serve it. */
export interface RpcDefinition {
  /** `/etcdserverpb.KV/Range`. */
  readonly path: string;
  /** The message types (names in schema.ts). */
  readonly requestType: string;
  readonly responseType: string;
  readonly requestStream: boolean;
  readonly responseStream: boolean;
  /** A request message (prefix removed) → the request object. */
  readonly decode: (message: Buffer) => unknown;
  /** A response object → its protobuf bytes. */
  readonly encode: (value: unknown) => Buffer;
  /** A response object → a gRPC message (the 5-byte prefix, then the bytes). */
  readonly encodeFramed: (value: unknown) => Buffer;
}

export type ServiceDefinition = Readonly<Record<string, RpcDefinition>>;

export type ServiceName = 'KV' | 'Watch' | 'Lease' | 'Cluster' | 'Maintenance' | 'Auth';

/** The services muster serves; RPCs of them not listed answer UNIMPLEMENTED. */
export type EtcdServices = Readonly<Record<ServiceName, ServiceDefinition>>;

/** `[request type, response type, streaming]` by RPC name. */
type Rpcs = Readonly<Record<string, readonly [string, string, ('bidi' | 'server')?]>>;

const RPCS: Readonly<Record<ServiceName, Rpcs>> = {
  KV: {
    Range: ['RangeRequest', 'RangeResponse'],
    Put: ['PutRequest', 'PutResponse'],
    DeleteRange: ['DeleteRangeRequest', 'DeleteRangeResponse'],
    Txn: ['TxnRequest', 'TxnResponse'],
    Compact: ['CompactionRequest', 'CompactionResponse'],
  },
  Watch: { Watch: ['WatchRequest', 'WatchResponse', 'bidi'] },
  Lease: {
    LeaseGrant: ['LeaseGrantRequest', 'LeaseGrantResponse'],
    LeaseRevoke: ['LeaseRevokeRequest', 'LeaseRevokeResponse'],
    LeaseKeepAlive: ['LeaseKeepAliveRequest', 'LeaseKeepAliveResponse', 'bidi'],
    LeaseTimeToLive: ['LeaseTimeToLiveRequest', 'LeaseTimeToLiveResponse'],
    LeaseLeases: ['LeaseLeasesRequest', 'LeaseLeasesResponse'],
  },
  Cluster: { MemberList: ['MemberListRequest', 'MemberListResponse'] },
  Maintenance: {
    Alarm: ['AlarmRequest', 'AlarmResponse'],
    Status: ['StatusRequest', 'StatusResponse'],
    Defragment: ['DefragmentRequest', 'DefragmentResponse'],
    Hash: ['HashRequest', 'HashResponse'],
    HashKV: ['HashKVRequest', 'HashKVResponse'],
    Snapshot: ['SnapshotRequest', 'SnapshotResponse', 'server'],
  },
  Auth: {
    AuthEnable: ['AuthEnableRequest', 'AuthEnableResponse'],
    AuthDisable: ['AuthDisableRequest', 'AuthDisableResponse'],
    AuthStatus: ['AuthStatusRequest', 'AuthStatusResponse'],
    Authenticate: ['AuthenticateRequest', 'AuthenticateResponse'],
    UserAdd: ['AuthUserAddRequest', 'AuthUserAddResponse'],
    UserGet: ['AuthUserGetRequest', 'AuthUserGetResponse'],
    UserList: ['AuthUserListRequest', 'AuthUserListResponse'],
    UserDelete: ['AuthUserDeleteRequest', 'AuthUserDeleteResponse'],
    UserChangePassword: ['AuthUserChangePasswordRequest', 'AuthUserChangePasswordResponse'],
    UserGrantRole: ['AuthUserGrantRoleRequest', 'AuthUserGrantRoleResponse'],
    UserRevokeRole: ['AuthUserRevokeRoleRequest', 'AuthUserRevokeRoleResponse'],
    RoleAdd: ['AuthRoleAddRequest', 'AuthRoleAddResponse'],
    RoleGet: ['AuthRoleGetRequest', 'AuthRoleGetResponse'],
    RoleList: ['AuthRoleListRequest', 'AuthRoleListResponse'],
    RoleDelete: ['AuthRoleDeleteRequest', 'AuthRoleDeleteResponse'],
    RoleGrantPermission: ['AuthRoleGrantPermissionRequest', 'AuthRoleGrantPermissionResponse'],
    RoleRevokePermission: ['AuthRoleRevokePermissionRequest', 'AuthRoleRevokePermissionResponse'],
  },
};

/** The hand-written codecs (wire.ts), by response type. */
const HOT: Readonly<Record<string, { decode?: (b: Buffer) => unknown; encode: (v: unknown) => Buffer }>> = {
  RangeResponse: { decode: decodeRequest.Range, encode: encodeResponse.Range },
  PutResponse: { decode: decodeRequest.Put, encode: encodeResponse.Put },
  DeleteRangeResponse: { decode: decodeRequest.DeleteRange, encode: encodeResponse.DeleteRange },
  TxnResponse: { decode: decodeRequest.Txn, encode: encodeResponse.Txn },
  WatchResponse: { encode: encodeWatchResponse },
};

function rpc(service: ServiceName, name: string, [req, res, streaming]: Rpcs[string]): RpcDefinition {
  const hot = HOT[res];
  return {
    path: `/etcdserverpb.${service}/${name}`,
    requestType: req,
    responseType: res,
    requestStream: streaming === 'bidi',
    responseStream: streaming !== undefined,
    decode: hot?.decode ?? ((message) => decodeMessage(req, message)),
    encode: hot?.encode ?? ((value) => encodeMessage(res, value)),
    encodeFramed:
      hot !== undefined ? framedEncoderOf(hot.encode) : (value) => encodeMessage(res, value, true),
  };
}

let built: EtcdServices | undefined;

/** The service definitions (built once per process; nothing is parsed). */
export function etcdServices(): EtcdServices {
  if (built !== undefined) return built;
  const out = {} as Record<ServiceName, ServiceDefinition>;
  for (const service of Object.keys(RPCS) as ServiceName[]) {
    const methods: Record<string, RpcDefinition> = {};
    for (const [name, spec] of Object.entries(RPCS[service])) methods[name] = rpc(service, name, spec);
    out[service] = methods;
  }
  built = out;
  return built;
}
