/**
 * What every service handler shares: the engine, the response header, the token check, and the
 * wrappers that turn async handlers into the call shapes of call.ts (which the transport and the
 * gateway call) with one error translation.
 */
import type { Metadata, StreamCall, UnaryCall, UnaryCallback, UnaryHandler } from './call.js';
import type { Logger } from 'pino';
import type { MemoryStore } from '../../store/internal.js';
import type { Alarms } from '../alarms.js';
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
  /**
   * Checks the call's token; returns the RBAC user whose permissions apply, or `undefined` when the
   * call may do anything (no authentication, the server token, a root user).
   */
  check(metadata: Metadata): string | undefined;
  /** Throws etcd's "permission denied" unless `user` may read (write) `[key, end)`. */
  authorize(user: string | undefined, key: string, end: string, write: boolean): void;
  /** Throws etcd's "permission denied" unless `user` has the root role. */
  requireRoot(user: string | undefined): void;
  /** etcd's `Authenticate`: a session token for a correct password. */
  authenticate(name: string, password: string): Promise<string>;
}

export interface ServiceContext {
  readonly store: MemoryStore;
  readonly auth: AuthGate;
  readonly memberId: string;
  readonly clusterId: string;
  /** The URL clients reach this server at (for MemberList). */
  readonly clientUrl: string;
  /** etcd's `--max-request-bytes`: the keys and values of one write together. */
  readonly maxRequestBytes: number;
  /** How often watchers that asked for `progress_notify` get a progress response when idle. */
  readonly progressNotifyMs: number;
  /** Called for every open stream so that shutdown can end them. */
  readonly streams: Set<{ end(): void }>;
  readonly log: Logger | undefined;
  /** Bytes used on disk (Status.dbSize). */
  dbSize(): number;
  /** The raised alarms (durable). */
  readonly alarms: Alarms;
  /** The state as a snapshot file (the Snapshot RPC). */
  exportSnapshot(): Promise<Buffer>;
}

/** The response header at `revision`. */
export function header(ctx: ServiceContext, revision: number): ResponseHeader {
  return { cluster_id: ctx.clusterId, member_id: ctx.memberId, revision, raft_term: 1 };
}

/** Wraps an async unary handler: token check, then the handler, with errors translated once. */
export function unary<Req, Res>(
  ctx: ServiceContext,
  fn: (req: Req, call: UnaryCall<Req>, user: string | undefined) => Promise<Res>,
  options: { auth?: boolean } = {},
): UnaryHandler<Req, Res> {
  const checkAuth = options.auth !== false;
  return (call: UnaryCall<Req>, callback: UnaryCallback<Res>) => {
    let user: string | undefined;
    try {
      // `enabled` first: the transport builds a call's metadata only when it is read.
      if (checkAuth && ctx.auth.enabled) user = ctx.auth.check(call.metadata);
    } catch (err) {
      callback(toGrpcError(err));
      return;
    }
    fn(call.request, call, user).then(
      (res) => callback(null, res),
      (err: unknown) => callback(toGrpcError(err)),
    );
  };
}

/** Ends a duplex stream with the status for `err`. */
export function failStream(call: Pick<StreamCall, 'emit'>, err: unknown): void {
  call.emit('error', toGrpcError(err));
}
