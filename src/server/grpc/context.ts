/**
 * What every service handler shares: the engine, the response header, the token check, and the
 * wrappers that turn async handlers into grpc-js handlers with one error translation.
 */
import type {
  handleUnaryCall,
  Metadata,
  sendUnaryData,
  ServerDuplexStream,
  ServerUnaryCall,
} from '@grpc/grpc-js';
import type { Logger } from 'pino';
import type { MemoryStore } from '../../store/index.js';
import { toGrpcError } from './errors.js';

/** etcd's `ResponseHeader` in loader object form. */
export interface ResponseHeader {
  cluster_id: string;
  member_id: string;
  revision: number;
  raft_term: number;
}

/** Checks a call's credentials; throws an etcd status error when they are missing or wrong. */
export interface AuthGate {
  readonly enabled: boolean;
  check(metadata: Metadata): void;
  /** etcd's `Authenticate`: a session token for a correct password. */
  authenticate(name: string, password: string): string;
}

export interface ServiceContext {
  readonly store: MemoryStore;
  readonly auth: AuthGate;
  readonly memberId: string;
  readonly clusterId: string;
  /** The URL clients reach this server at (for MemberList). */
  readonly clientUrl: string;
  /** How often watchers that asked for `progress_notify` get a progress response when idle. */
  readonly progressNotifyMs: number;
  /** Called for every open stream so that shutdown can end them. */
  readonly streams: Set<{ end(): void }>;
  readonly log: Logger | undefined;
  /** Bytes used on disk (Status.dbSize). */
  dbSize(): number;
}

/** The response header at `revision`. */
export function header(ctx: ServiceContext, revision: number): ResponseHeader {
  return { cluster_id: ctx.clusterId, member_id: ctx.memberId, revision, raft_term: 1 };
}

/** Wraps an async unary handler: token check, then the handler, with errors translated once. */
export function unary<Req, Res>(
  ctx: ServiceContext,
  fn: (req: Req, call: ServerUnaryCall<Req, Res>) => Promise<Res>,
  options: { auth?: boolean } = {},
): handleUnaryCall<Req, Res> {
  const checkAuth = options.auth !== false;
  return (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>) => {
    try {
      if (checkAuth) ctx.auth.check(call.metadata);
    } catch (err) {
      callback(toGrpcError(err));
      return;
    }
    fn(call.request, call).then(
      (res) => callback(null, res),
      (err: unknown) => callback(toGrpcError(err)),
    );
  };
}

/** Ends a duplex stream with the status for `err`. */
export function failStream(call: ServerDuplexStream<unknown, unknown>, err: unknown): void {
  call.emit('error', toGrpcError(err));
}
