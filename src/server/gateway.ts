/**
 * etcd's HTTP/JSON gateway on the client port, as etcd serves it next to gRPC (its `cmux`): the
 * first bytes of each connection decide — the HTTP/2 preface goes to the gRPC transport (the socket
 * itself is handed over: no proxying, no cost per request), anything else to this HTTP/1.1 server.
 *
 * Routes (POST, JSON bodies in etcd's gateway form: proto field names, bytes in base64, int64 as
 * strings): `/v3/kv/{range,put,deleterange,txn,compaction}`, `/v3/watch` (a stream of
 * `{"result": WatchResponse}` lines), `/v3/lease/{grant,revoke,keepalive,timetolive,leases}` (and
 * `/v3/kv/lease/...`), `/v3/auth/authenticate` and the other auth RPCs, `/v3/maintenance/status`,
 * `/v3/cluster/member/list`; GET `/health`, `/version` and `/metrics` (the registry the server was
 * given, as on the admin server; 404 without one). A token goes in the `Authorization`
 * header, as etcd's gateway takes it. Each request runs the same handler as its gRPC call, through
 * the RPC's own protobuf codecs (JSON ↔ protobuf by proto-codec.ts), so both answer alike.
 */
import { EventEmitter } from 'node:events';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Metadata, type ServiceImplementation, status, type StatusCode } from './grpc/call.js';
import { toGrpcError } from './grpc/errors.js';
import { REPORTED_ETCD_VERSION } from './grpc/maintenance.js';
import { encodeMessage, messageFromJson, messageToJson } from './grpc/proto-codec.js';
import type { EtcdServices, RpcDefinition } from './grpc/services.js';

/** Largest gateway request body (etcd's request limit plus JSON and base64 overhead). */
export const MAX_GATEWAY_BODY_BYTES = 4 * 1024 * 1024;

type Impls = Record<keyof EtcdServices, ServiceImplementation>;

/** `[service, method]` by gateway path (etcd 3.4's paths, with the `/v3/kv/lease/*` aliases). */
const ROUTES: Record<string, [keyof EtcdServices, string]> = {
  '/v3/kv/range': ['KV', 'Range'],
  '/v3/kv/put': ['KV', 'Put'],
  '/v3/kv/deleterange': ['KV', 'DeleteRange'],
  '/v3/kv/txn': ['KV', 'Txn'],
  '/v3/kv/compaction': ['KV', 'Compact'],
  '/v3/lease/grant': ['Lease', 'LeaseGrant'],
  '/v3/lease/revoke': ['Lease', 'LeaseRevoke'],
  '/v3/kv/lease/revoke': ['Lease', 'LeaseRevoke'],
  '/v3/lease/timetolive': ['Lease', 'LeaseTimeToLive'],
  '/v3/kv/lease/timetolive': ['Lease', 'LeaseTimeToLive'],
  '/v3/lease/leases': ['Lease', 'LeaseLeases'],
  '/v3/kv/lease/leases': ['Lease', 'LeaseLeases'],
  '/v3/maintenance/status': ['Maintenance', 'Status'],
  '/v3/maintenance/alarm': ['Maintenance', 'Alarm'],
  '/v3/cluster/member/list': ['Cluster', 'MemberList'],
  '/v3/auth/authenticate': ['Auth', 'Authenticate'],
  '/v3/auth/status': ['Auth', 'AuthStatus'],
  '/v3/auth/enable': ['Auth', 'AuthEnable'],
  '/v3/auth/disable': ['Auth', 'AuthDisable'],
  '/v3/auth/user/add': ['Auth', 'UserAdd'],
  '/v3/auth/user/get': ['Auth', 'UserGet'],
  '/v3/auth/user/list': ['Auth', 'UserList'],
  '/v3/auth/user/delete': ['Auth', 'UserDelete'],
  '/v3/auth/user/changepw': ['Auth', 'UserChangePassword'],
  '/v3/auth/user/grant': ['Auth', 'UserGrantRole'],
  '/v3/auth/user/revoke': ['Auth', 'UserRevokeRole'],
  '/v3/auth/role/add': ['Auth', 'RoleAdd'],
  '/v3/auth/role/get': ['Auth', 'RoleGet'],
  '/v3/auth/role/list': ['Auth', 'RoleList'],
  '/v3/auth/role/delete': ['Auth', 'RoleDelete'],
  '/v3/auth/role/grant': ['Auth', 'RoleGrantPermission'],
  '/v3/auth/role/revoke': ['Auth', 'RoleRevokePermission'],
};

/** gRPC status → HTTP status, as the grpc-gateway of etcd 3.4 (v1) maps them. */
function httpStatus(code: StatusCode): number {
  switch (code) {
    case status.INVALID_ARGUMENT:
    case status.OUT_OF_RANGE:
      return 400;
    case status.FAILED_PRECONDITION:
      return 412;
    case status.CANCELLED:
      return 408;
    case status.ALREADY_EXISTS:
    case status.ABORTED:
      return 409;
    case status.DEADLINE_EXCEEDED:
      return 504;
    case status.UNAUTHENTICATED:
      return 401;
    case status.PERMISSION_DENIED:
      return 403;
    case status.NOT_FOUND:
      return 404;
    case status.RESOURCE_EXHAUSTED:
      return 429;
    case status.UNIMPLEMENTED:
      return 501;
    case status.UNAVAILABLE:
      return 503;
    default:
      return 500;
  }
}

/** JSON (gateway form) → the request object the handler gets, through the RPC's own decoder. */
function decodeRequest(method: RpcDefinition, json: unknown): unknown {
  return method.decode(messageFromJson(method.requestType, json));
}

/**
 * The handler's response object → JSON (gateway form), through the RPC's own encoder: the JSON
 * says what the gRPC answer says.
 */
function encodeResponse(method: RpcDefinition, response: unknown): unknown {
  return messageToJson(method.responseType, method.encode(response));
}

function metadataOf(req: IncomingMessage): Metadata {
  const token = req.headers.authorization;
  return new Metadata(
    typeof token === 'string' && token !== '' ? { token: token.replace(/^Bearer\s+/i, '') } : {},
  );
}

function sendJson(res: ServerResponse, code: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(code, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function sendError(res: ServerResponse, err: unknown): void {
  const e = toGrpcError(err);
  sendJson(res, httpStatus(e.code), { error: e.details, message: e.details, code: e.code });
}

function readBody(req: IncomingMessage): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_GATEWAY_BODY_BYTES) {
        reject(
          Object.assign(new Error('etcdserver: request is too large'), { code: status.INVALID_ARGUMENT }),
        );
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8').trim();
      try {
        resolve(text === '' ? {} : JSON.parse(text));
      } catch {
        reject(new Error('the body is not JSON'));
      }
    });
    req.on('error', reject);
  });
}

/** The gateway's request handler for `node:http`. */
export function gatewayHandler(
  services: EtcdServices,
  impls: Impls,
  keepAlive: (id: string, metadata: Metadata) => Promise<Record<string, unknown>>,
  metrics?: { contentType: string; metrics(): Promise<string> },
): (req: IncomingMessage, res: ServerResponse) => void {
  const method = (service: keyof EtcdServices, name: string): RpcDefinition => {
    const def = services[service][name];
    if (def === undefined) throw new Error(`no RPC ${service}.${name}`);
    return def;
  };

  async function unaryCall(req: IncomingMessage, res: ServerResponse, route: [keyof EtcdServices, string]) {
    const [service, name] = route;
    const def = method(service, name);
    const request = decodeRequest(def, await readBody(req));
    const handler = impls[service][name] as (call: unknown, cb: (err: unknown, r?: unknown) => void) => void;
    handler({ request, metadata: metadataOf(req) }, (err, response) => {
      if (err) sendError(res, err);
      else sendJson(res, 200, encodeResponse(def, response));
    });
  }

  async function watch(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const def = method('Watch', 'Watch');
    const request = decodeRequest(def, await readBody(req));
    const call = Object.assign(new EventEmitter(), {
      metadata: metadataOf(req),
      write(response: unknown): boolean {
        if (!res.headersSent) res.writeHead(200, { 'content-type': 'application/json' });
        return res.write(`${JSON.stringify({ result: encodeResponse(def, response) })}\n`);
      },
      end(): void {
        if (!res.headersSent) res.writeHead(200, { 'content-type': 'application/json' });
        res.end();
      },
    });
    call.on('error', (err: unknown) => {
      if (!res.headersSent) sendError(res, err);
      else res.end();
    });
    res.on('close', () => call.emit('cancelled'));
    (impls.Watch.Watch as (c: unknown) => void)(call);
    call.emit('data', request);
  }

  async function leaseKeepAlive(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const body = (await readBody(req)) as { ID?: string | number };
    const answer = await keepAlive(String(body.ID ?? '0'), metadataOf(req));
    // Through the codec, as every other answer: int64s as strings, defaults left out.
    const type = 'LeaseKeepAliveResponse';
    sendJson(res, 200, { result: messageToJson(type, encodeMessage(type, answer)) });
  }

  return (req, res) => {
    const path = (req.url ?? '/').split('?')[0] as string;
    const run = async (): Promise<void> => {
      if (path === '/health' && req.method === 'GET')
        return sendJson(res, 200, { health: 'true', reason: '' });
      if (path === '/version' && req.method === 'GET') {
        return sendJson(res, 200, { etcdserver: REPORTED_ETCD_VERSION, etcdcluster: '3.4.0' });
      }
      if (path === '/metrics' && req.method === 'GET' && metrics !== undefined) {
        const text = await metrics.metrics();
        res.writeHead(200, { 'content-type': metrics.contentType });
        res.end(text);
        return;
      }
      if (req.method !== 'POST') return sendJson(res, 405, { error: 'use POST', code: status.UNIMPLEMENTED });
      if (path === '/v3/watch') return watch(req, res);
      if (path === '/v3/lease/keepalive') return leaseKeepAlive(req, res);
      const route = ROUTES[path];
      if (route === undefined) return sendJson(res, 404, { error: 'Not Found', code: status.NOT_FOUND });
      return unaryCall(req, res, route);
    };
    run().catch((err: unknown) => {
      if (!res.headersSent) sendError(res, err);
      else res.end();
    });
  };
}
