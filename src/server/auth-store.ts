/**
 * etcd's role-based access control for `muster serve`: users (scrypt password hashes), roles with
 * key-range permissions, and whether authentication is enabled — kept durably in the data
 * directory (`auth.json`, replaced whole: temporary file, fsync, rename, directory fsync, so a crash
 * leaves the old or the new state).
 *
 * Rules, as etcd's: `root` (the role) may do anything; enabling needs a `root` user holding the
 * `root` role; while enabled, the root user cannot be deleted nor lose the root role. A permission
 * `[key, range_end)` (no range_end: the one key; range_end "\0": every key from `key` on) covers a
 * request whose whole range lies inside it. Keys are binary strings (see grpc/convert.ts).
 */
import { randomBytes, scrypt as scryptCb, timingSafeEqual } from 'node:crypto';
import { closeSync, fsyncSync, openSync } from 'node:fs';
import { readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { MusterError } from '../errors.js';
import { crashPoint } from './crash-point.js';
import { syncDir } from './wal.js';

const scrypt = promisify(scryptCb) as (password: string, salt: Buffer, keylen: number) => Promise<Buffer>;

export const AUTH_FILE = 'auth.json';
export const ROOT = 'root';
/** `authpb.Permission.Type`. */
export const PERM_READ = 0;
export const PERM_WRITE = 1;
export const PERM_READWRITE = 2;

export interface Permission {
  readonly permType: number;
  /** Binary strings; `end` '' is one key, '\0' every key from `key` on. */
  readonly key: string;
  readonly end: string;
}
interface User {
  name: string;
  /** `salt:hash` in hex; '' for a user without a password (cannot authenticate). */
  password: string;
  roles: string[];
}
interface Role {
  name: string;
  perms: Permission[];
}
interface State {
  enabled: boolean;
  revision: number;
  users: User[];
  roles: Role[];
}

/** A refusal in etcd's terms: the server turns `code` into etcd's status and message. */
export class AuthError extends Error {
  constructor(readonly reason: AuthErrorReason) {
    super(reason);
  }
}
export type AuthErrorReason =
  | 'userEmpty'
  | 'userExists'
  | 'userNotFound'
  | 'roleEmpty'
  | 'roleExists'
  | 'roleNotFound'
  | 'roleNotGranted'
  | 'permissionNotGranted'
  | 'rootUserMissing'
  | 'rootRoleMissing'
  | 'authFailed'
  | 'invalidAuthMgmt';

export class AuthStore {
  readonly #dir: string;
  #state: State;
  #writing: Promise<void> = Promise.resolve();

  private constructor(dir: string, state: State) {
    this.#dir = dir;
    this.#state = state;
  }

  /** Reads `auth.json` (empty, disabled when missing). Throws `MUSTER_CORRUPT_DATA` when unreadable. */
  static async load(dir: string): Promise<AuthStore> {
    const file = join(dir, AUTH_FILE);
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        return new AuthStore(dir, { enabled: false, revision: 1, users: [], roles: [] });
      }
      throw err;
    }
    try {
      const s = JSON.parse(text) as State;
      if (!Array.isArray(s.users) || !Array.isArray(s.roles)) throw new Error('users or roles missing');
      return new AuthStore(dir, s);
    } catch (err) {
      throw new MusterError('MUSTER_CORRUPT_DATA', `${file} cannot be parsed; restore it from a backup`, {
        cause: err,
        details: { file },
      });
    }
  }

  get enabled(): boolean {
    return this.#state.enabled;
  }

  get revision(): number {
    return this.#state.revision;
  }

  // ---- queries -----------------------------------------------------------------------------------

  users(): string[] {
    return this.#state.users.map((u) => u.name).sort();
  }

  roles(): string[] {
    return this.#state.roles.map((r) => r.name).sort();
  }

  userRoles(name: string): string[] {
    return [...this.#user(name).roles].sort();
  }

  rolePerms(name: string): Permission[] {
    return this.#role(name).perms;
  }

  hasUser(name: string): boolean {
    return this.#state.users.some((u) => u.name === name);
  }

  isRoot(name: string): boolean {
    return this.#state.users.find((u) => u.name === name)?.roles.includes(ROOT) === true;
  }

  /** Resolves when `password` is the user's; throws `authFailed` otherwise. */
  async checkPassword(name: string, password: string): Promise<void> {
    const u = this.#state.users.find((x) => x.name === name);
    if (u === undefined || u.password === '') throw new AuthError('authFailed');
    const [salt, hash] = u.password.split(':') as [string, string];
    const got = await scrypt(password, Buffer.from(salt, 'hex'), 32);
    if (!timingSafeEqual(got, Buffer.from(hash, 'hex'))) throw new AuthError('authFailed');
  }

  /**
   * True when user `name` may read (or write) every key of `[key, end)` (`end` '' one key, '\0' to
   * the end). Unknown users may do nothing.
   */
  permitted(name: string, key: string, end: string, write: boolean): boolean {
    const u = this.#state.users.find((x) => x.name === name);
    if (u === undefined) return false;
    if (u.roles.includes(ROOT)) return true;
    for (const roleName of u.roles) {
      const role = this.#state.roles.find((r) => r.name === roleName);
      if (role === undefined) continue;
      for (const p of role.perms) {
        const kind = write ? p.permType !== PERM_READ : p.permType !== PERM_WRITE;
        if (kind && covers(p, key, end)) return true;
      }
    }
    return false;
  }

  // ---- changes (each durable before it resolves) -----------------------------------------------------

  async userAdd(name: string, password: string, noPassword: boolean): Promise<void> {
    if (name === '') throw new AuthError('userEmpty');
    if (this.hasUser(name)) throw new AuthError('userExists');
    const hashed = noPassword ? '' : await hashPassword(password);
    await this.#change((s) => s.users.push({ name, password: hashed, roles: [] }));
  }

  async userDelete(name: string): Promise<void> {
    this.#user(name);
    if (this.#state.enabled && name === ROOT) throw new AuthError('invalidAuthMgmt');
    await this.#change((s) => {
      s.users = s.users.filter((u) => u.name !== name);
    });
  }

  async userChangePassword(name: string, password: string): Promise<void> {
    this.#user(name);
    const hashed = await hashPassword(password);
    await this.#change((s) => {
      const u = s.users.find((x) => x.name === name);
      if (u !== undefined) u.password = hashed;
    });
  }

  async userGrantRole(name: string, role: string): Promise<void> {
    const u = this.#user(name);
    if (role !== ROOT) this.#role(role);
    if (u.roles.includes(role)) return;
    await this.#change((s) => s.users.find((x) => x.name === name)?.roles.push(role));
  }

  async userRevokeRole(name: string, role: string): Promise<void> {
    const u = this.#user(name);
    if (!u.roles.includes(role)) throw new AuthError('roleNotGranted');
    if (this.#state.enabled && name === ROOT && role === ROOT) throw new AuthError('invalidAuthMgmt');
    await this.#change((s) => {
      const x = s.users.find((y) => y.name === name);
      if (x !== undefined) x.roles = x.roles.filter((r) => r !== role);
    });
  }

  async roleAdd(name: string): Promise<void> {
    if (name === '') throw new AuthError('roleEmpty');
    if (this.#state.roles.some((r) => r.name === name)) throw new AuthError('roleExists');
    await this.#change((s) => s.roles.push({ name, perms: [] }));
  }

  async roleDelete(name: string): Promise<void> {
    this.#role(name);
    if (this.#state.enabled && name === ROOT) throw new AuthError('invalidAuthMgmt');
    await this.#change((s) => {
      s.roles = s.roles.filter((r) => r.name !== name);
      for (const u of s.users) u.roles = u.roles.filter((r) => r !== name);
    });
  }

  async roleGrantPermission(name: string, perm: Permission): Promise<void> {
    this.#role(name);
    await this.#change((s) => {
      const role = s.roles.find((r) => r.name === name);
      if (role === undefined) return;
      const same = role.perms.findIndex((p) => p.key === perm.key && p.end === perm.end);
      if (same >= 0) role.perms[same] = perm;
      else role.perms.push(perm);
      role.perms.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    });
  }

  async roleRevokePermission(name: string, key: string, end: string): Promise<void> {
    const role = this.#role(name);
    if (!role.perms.some((p) => p.key === key && p.end === end)) throw new AuthError('permissionNotGranted');
    await this.#change((s) => {
      const r = s.roles.find((x) => x.name === name);
      if (r !== undefined) r.perms = r.perms.filter((p) => !(p.key === key && p.end === end));
    });
  }

  async enable(): Promise<void> {
    if (this.#state.enabled) return;
    const root = this.#state.users.find((u) => u.name === ROOT);
    if (root === undefined) throw new AuthError('rootUserMissing');
    if (!root.roles.includes(ROOT)) throw new AuthError('rootRoleMissing');
    await this.#change((s) => {
      s.enabled = true;
      if (!s.roles.some((r) => r.name === ROOT)) s.roles.push({ name: ROOT, perms: [] });
    });
  }

  async disable(): Promise<void> {
    if (!this.#state.enabled) return;
    await this.#change((s) => {
      s.enabled = false;
    });
  }

  #user(name: string): User {
    if (name === '') throw new AuthError('userEmpty');
    const u = this.#state.users.find((x) => x.name === name);
    if (u === undefined) throw new AuthError('userNotFound');
    return u;
  }

  #role(name: string): Role {
    if (name === '') throw new AuthError('roleEmpty');
    if (name === ROOT && !this.#state.roles.some((r) => r.name === ROOT)) return { name: ROOT, perms: [] };
    const r = this.#state.roles.find((x) => x.name === name);
    if (r === undefined) throw new AuthError('roleNotFound');
    return r;
  }

  /** Applies `fn` to a copy, writes it durably, then makes it current. Writes are serialised. */
  #change(fn: (s: State) => void): Promise<void> {
    const run = async (): Promise<void> => {
      const next = structuredClone(this.#state);
      fn(next);
      next.revision++;
      const file = join(this.#dir, AUTH_FILE);
      const tmp = `${file}.tmp`;
      await writeFile(tmp, `${JSON.stringify(next)}\n`);
      const fd = openSync(tmp, 'r+');
      try {
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      crashPoint('auth.tmp-synced');
      await rename(tmp, file);
      crashPoint('auth.renamed');
      syncDir(this.#dir);
      this.#state = next;
    };
    this.#writing = this.#writing.catch(() => undefined).then(run);
    return this.#writing;
  }
}

async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(16);
  const hash = await scrypt(password, salt, 32);
  return `${salt.toString('hex')}:${hash.toString('hex')}`;
}

/** True when permission `p` covers the request range `[key, end)`. */
function covers(p: Permission, key: string, end: string): boolean {
  if (p.end === '') return end === '' && key === p.key;
  if (key < p.key) return false;
  if (p.end === '\0') return true;
  if (end === '') return key < p.end;
  if (end === '\0') return false;
  return end <= p.end;
}
