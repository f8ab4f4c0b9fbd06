/**
 * Token authentication, in etcd's terms so that etcd clients need nothing special.
 *
 * With a token configured, every call must carry gRPC metadata `token: <token>` — either the token
 * itself or a session token from etcd's `Authenticate` RPC, which accepts any user name with the
 * token as the password (`etcdctl --user root:<token>`, `etcd://root:<token>@host:2379`). Without a
 * token, calls need no credentials and `Authenticate` answers "authentication is not enabled".
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { type Metadata, status, type UntypedServiceImplementation } from '@grpc/grpc-js';
import type { AuthGate, ServiceContext } from './context.js';
import { header, unary } from './context.js';
import { ETCD, EtcdStatusError } from './errors.js';

/** Most session tokens kept; the oldest are forgotten first (clients re-authenticate). */
export const MAX_SESSIONS = 10_000;

function same(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/**
 * The tokens a call carries, the first one first. Some clients send the `token` metadata twice
 * (python-etcd3: as metadata and as call credentials); grpc-js joins repeated values with ", ", and
 * etcd, which reads the first value, accepts such a call — so the whole value is tried, then each
 * comma-separated part.
 */
export function tokensOf(metadata: Metadata): string[] {
  const out: string[] = [];
  for (const v of metadata.get('token')) {
    const text = typeof v === 'string' ? v : v.toString('utf8');
    if (text === '') continue;
    out.push(text);
    if (text.includes(',')) for (const part of text.split(',')) if (part.trim() !== '') out.push(part.trim());
  }
  return out;
}

/** The gate for a token, or an open gate when `token` is undefined. */
export function tokenGate(token: string | undefined): AuthGate {
  const sessions = new Set<string>();
  return {
    enabled: token !== undefined,
    check(metadata: Metadata): void {
      if (token === undefined) return;
      const given = tokensOf(metadata);
      if (given.length === 0) throw ETCD.userEmpty();
      for (const text of given) if (sessions.has(text) || same(text, token)) return;
      throw ETCD.invalidToken();
    },
    authenticate(name: string, password: string): string {
      if (token === undefined) {
        throw new EtcdStatusError(status.FAILED_PRECONDITION, 'etcdserver: authentication is not enabled');
      }
      if (name === '') throw ETCD.userEmpty();
      if (!same(password, token)) throw ETCD.authFailed();
      const session = `muster.${randomBytes(24).toString('base64url')}`;
      if (sessions.size >= MAX_SESSIONS) {
        const oldest = sessions.values().next().value;
        if (oldest !== undefined) sessions.delete(oldest);
      }
      sessions.add(session);
      return session;
    },
  };
}

export function authService(ctx: ServiceContext): UntypedServiceImplementation {
  async function authenticate(req: { name: string; password: string }): Promise<Record<string, unknown>> {
    const token = ctx.auth.authenticate(req.name, req.password);
    return { header: header(ctx, ctx.store.revision), token };
  }
  async function authStatus(): Promise<Record<string, unknown>> {
    return { header: header(ctx, ctx.store.revision), enabled: ctx.auth.enabled, authRevision: 0 };
  }
  return {
    Authenticate: unary(ctx, authenticate, { auth: false }),
    AuthStatus: unary(ctx, authStatus, { auth: false }),
  };
}
