/**
 * Authentication and authorisation, in etcd's terms so that etcd clients need nothing special.
 *
 * Two sources of credentials, either or both:
 * - the server token (`--token-file`): every call carries gRPC metadata `token: <token>`, either the
 *   token itself or a session token from `Authenticate` with any user name and the token as the
 *   password (`etcdctl --user root:<token>`). It is a root credential.
 * - etcd's RBAC (users, roles, permissions; `etcdctl user/role/auth`, see ../auth-store.ts): once
 *   `AuthEnable` turned it on, a call needs a session token from `Authenticate` with a user's
 *   password, and KV reads, writes and watches are checked against the user's roles by key range.
 *   Maintenance calls that read everything (Snapshot, Hash, HashKV, Defragment) and the auth
 *   management calls need the root role.
 * With neither, calls need no credentials and `Authenticate` answers "authentication is not enabled".
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { AuthError, type AuthErrorReason, type AuthStore, type Permission } from '../auth-store.js';
import { type Metadata, type ServiceImplementation, status, type StatusCode } from './call.js';
import type { AuthGate, ServiceContext } from './context.js';
import { header, unary } from './context.js';
import { binary } from './convert.js';
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
 * (python-etcd3: as metadata and as call credentials); Node's HTTP/2 joins repeated values with ", ", and
 * etcd, which reads the first value, accepts such a call — so the whole value is tried, then each
 * comma-separated part.
 */
export function tokensOf(metadata: Metadata): string[] {
  const out: string[] = [];
  for (const text of metadata.get('token')) {
    if (text === '') continue;
    out.push(text);
    if (text.includes(',')) for (const part of text.split(',')) if (part.trim() !== '') out.push(part.trim());
  }
  return out;
}

const FAILED = status.FAILED_PRECONDITION;
const MESSAGES: Record<AuthErrorReason, [StatusCode, string]> = {
  userEmpty: [status.INVALID_ARGUMENT, 'etcdserver: user name is empty'],
  userExists: [FAILED, 'etcdserver: user name already exists'],
  userNotFound: [FAILED, 'etcdserver: user name not found'],
  roleEmpty: [status.INVALID_ARGUMENT, 'etcdserver: role name is empty'],
  roleExists: [FAILED, 'etcdserver: role name already exists'],
  roleNotFound: [FAILED, 'etcdserver: role name not found'],
  roleNotGranted: [FAILED, 'etcdserver: role is not granted to the user'],
  permissionNotGranted: [FAILED, 'etcdserver: permission is not granted to the role'],
  rootUserMissing: [FAILED, 'etcdserver: root user does not exist'],
  rootRoleMissing: [FAILED, 'etcdserver: root user does not have root role'],
  authFailed: [status.INVALID_ARGUMENT, 'etcdserver: authentication failed, invalid user ID or password'],
  invalidAuthMgmt: [status.INVALID_ARGUMENT, 'etcdserver: invalid auth management'],
};

/** An {@link AuthError} as the status etcd sends. */
export function authStatusError(err: AuthError): EtcdStatusError {
  const [code, message] = MESSAGES[err.reason];
  return new EtcdStatusError(code, message);
}

const permissionDenied = (): EtcdStatusError =>
  new EtcdStatusError(status.PERMISSION_DENIED, 'etcdserver: permission denied');
const notEnabled = (): EtcdStatusError =>
  new EtcdStatusError(status.FAILED_PRECONDITION, 'etcdserver: authentication is not enabled');

/** A session: the RBAC user it belongs to, or `undefined` for the server token (root). */
type Session = string | undefined;

/** The gate for the server `token` (undefined: none) and the RBAC `store`. */
export function authGate(token: string | undefined, store: AuthStore): AuthGate {
  const sessions = new Map<string, Session>();
  return {
    get enabled() {
      return token !== undefined || store.enabled;
    },
    check(metadata: Metadata): string | undefined {
      if (token === undefined && !store.enabled) return undefined;
      const given = tokensOf(metadata);
      if (given.length === 0) throw ETCD.userEmpty();
      for (const text of given) {
        if (token !== undefined && same(text, token)) return undefined;
        if (sessions.has(text)) {
          const user = sessions.get(text);
          // A root session, or RBAC switched off since: nothing to check.
          return user === undefined || !store.enabled ? undefined : user;
        }
      }
      throw ETCD.invalidToken();
    },
    authorize(user: string | undefined, key: string, end: string, write: boolean): void {
      if (user === undefined) return;
      if (!store.permitted(user, key, end, write)) throw permissionDenied();
    },
    requireRoot(user: string | undefined): void {
      if (user === undefined) return;
      if (!store.isRoot(user)) throw permissionDenied();
    },
    async authenticate(name: string, password: string): Promise<string> {
      if (token === undefined && !store.enabled) throw notEnabled();
      if (name === '') throw ETCD.userEmpty();
      let session: Session;
      if (store.enabled && store.hasUser(name)) {
        try {
          await store.checkPassword(name, password);
        } catch (err) {
          if (token === undefined || !same(password, token)) throw err;
        }
        session = store.isRoot(name) ? undefined : name;
      } else if (token !== undefined && same(password, token)) {
        session = undefined;
      } else {
        throw ETCD.authFailed();
      }
      const text = `muster.${randomBytes(24).toString('base64url')}`;
      if (sessions.size >= MAX_SESSIONS) {
        const oldest = sessions.keys().next().value;
        if (oldest !== undefined) sessions.delete(oldest);
      }
      sessions.set(text, session);
      return text;
    },
  };
}

/** A request range as binary strings: `end` '' one key, '\0' every key from `key` on. */
export function rangeOf(key: Buffer | undefined | null, end: Buffer | undefined | null): [string, string] {
  const k = key == null ? '' : binary(key);
  if (end == null || end.length === 0) return [k, ''];
  if (end.length === 1 && end[0] === 0) return [k, '\0'];
  return [k, binary(end)];
}

interface ProtoPermission {
  permType: number;
  key: Buffer;
  range_end: Buffer;
}

export function authService(ctx: ServiceContext, store: AuthStore): ServiceImplementation {
  const h = (): ReturnType<typeof header> => header(ctx, ctx.store.revision);
  /** An auth management call: root only once RBAC is on; changes answered with the header. */
  const admin = <Req>(fn: (req: Req) => Promise<Record<string, unknown> | void>) =>
    unary(ctx, async (req: Req, _call: unknown, user: string | undefined) => {
      if (store.enabled) ctx.auth.requireRoot(user);
      try {
        const out = await fn(req);
        return { header: h(), ...(out ?? {}) };
      } catch (err) {
        if (err instanceof AuthError) throw authStatusError(err);
        throw err;
      }
    });
  return {
    Authenticate: unary(
      ctx,
      async (req: { name: string; password: string }) => {
        try {
          return { header: h(), token: await ctx.auth.authenticate(req.name, req.password) };
        } catch (err) {
          if (err instanceof AuthError) throw authStatusError(err);
          throw err;
        }
      },
      { auth: false },
    ),
    AuthStatus: unary(
      ctx,
      async () => ({ header: h(), enabled: ctx.auth.enabled, authRevision: store.revision }),
      {
        auth: false,
      },
    ),
    AuthEnable: admin(async () => {
      await store.enable();
      ctx.log?.info('authentication enabled');
    }),
    AuthDisable: admin(async () => {
      await store.disable();
      ctx.log?.info('authentication disabled');
    }),
    UserAdd: admin(async (r: { name: string; password: string; options?: { no_password?: boolean } }) => {
      await store.userAdd(r.name, r.password, r.options?.no_password === true);
    }),
    UserGet: admin(async (r: { name: string }) => ({ roles: store.userRoles(r.name) })),
    UserList: admin(async () => ({ users: store.users() })),
    UserDelete: admin(async (r: { name: string }) => store.userDelete(r.name)),
    UserChangePassword: admin(async (r: { name: string; password: string }) =>
      store.userChangePassword(r.name, r.password),
    ),
    UserGrantRole: admin(async (r: { user: string; role: string }) => store.userGrantRole(r.user, r.role)),
    UserRevokeRole: admin(async (r: { name: string; role: string }) => store.userRevokeRole(r.name, r.role)),
    RoleAdd: admin(async (r: { name: string }) => store.roleAdd(r.name)),
    RoleGet: admin(async (r: { role: string }) => ({
      perm: store.rolePerms(r.role).map((p) => ({
        permType: p.permType,
        key: Buffer.from(p.key, 'latin1'),
        range_end: Buffer.from(p.end, 'latin1'),
      })),
    })),
    RoleList: admin(async () => ({ roles: store.roles() })),
    RoleDelete: admin(async (r: { role: string }) => store.roleDelete(r.role)),
    RoleGrantPermission: admin(async (r: { name: string; perm?: ProtoPermission }) => {
      if (r.perm == null) throw ETCD.invalid('a permission is required');
      const [key, end] = rangeOf(r.perm.key, r.perm.range_end);
      const perm: Permission = { permType: r.perm.permType, key, end };
      await store.roleGrantPermission(r.name, perm);
    }),
    RoleRevokePermission: admin(async (r: { role: string; key: Buffer; range_end: Buffer }) => {
      const [key, end] = rangeOf(r.key, r.range_end);
      await store.roleRevokePermission(r.role, key, end);
    }),
  };
}
