/**
 * Starts a real PostgreSQL server for tests, and breaks it.
 *
 * `startPostgres()` runs `initdb` into a temporary directory, then `postgres` on a free loopback port
 * with its unix socket in that directory (never `/var/run/postgresql`), waits until it accepts
 * connections, and returns a handle to create a database per test file, stop, `kill -9` and restart
 * the server. The server runs through the process kernel (`src/process/`), so it dies with the test
 * process even on SIGKILL; `close()` kills it and removes the directory (and the next start removes
 * the directories of test processes that died without closing).
 *
 * Binaries: `$MUSTER_PG_BINDIR`, else `initdb` on PATH, else the newest `/usr/lib/postgresql/<n>/bin`
 * (Debian keeps them off PATH). `initdb` and `postgres` refuse to run as root: when the tests run as
 * root, the directory is given to `nobody` and both run as `nobody:nogroup` through
 * `setpriv --reuid --regid --clear-groups` (util-linux). Suites guard themselves with
 * {@link needPostgres}: skipped where PostgreSQL is missing, a failure under `MUSTER_REQUIRE_SERVICES=1`.
 */
import {
  chmodSync,
  chownSync,
  closeSync,
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { MusterError } from '../errors.js';
import { type ProcessHandle, spawnProcess } from '../process/index.js';
import { adminQuery } from '../store/internal.js';
import { freePort } from './etcd-harness.js';
import { findBinary, servicesRequired } from './services.js';
import { isProcessAlive } from '../util/process.js';

/** What to tell a developer without PostgreSQL. */
export const POSTGRES_INSTALL_HINT =
  'apt-get install postgresql (Debian/Ubuntu), or set MUSTER_PG_BINDIR to a directory holding initdb and postgres (13+)';

/** The superuser `initdb` creates; trust authentication on loopback, so no password. */
export const TEST_PG_USER = 'muster';
/** uid/gid of `nobody`/`nogroup` on Debian, used when the tests run as root. */
const NOBODY = 65534;
/** 5 s between SIGINT (fast shutdown) and SIGKILL. */
const STOP_GRACE_MS = 5000;

/** The directory holding `initdb` and `postgres`, or `undefined`. */
export function findPostgresBinDir(
  env: NodeJS.ProcessEnv = process.env,
  debianRoot = '/usr/lib/postgresql',
): string | undefined {
  if (env.MUSTER_PG_BINDIR && findBinary(join(env.MUSTER_PG_BINDIR, 'initdb'))) return env.MUSTER_PG_BINDIR;
  const onPath = findBinary('initdb', env.PATH);
  if (onPath !== undefined && findBinary(join(onPath, '..', 'postgres'))) return join(onPath, '..');
  try {
    const versions = readdirSync(debianRoot)
      .filter((v) => /^\d+$/.test(v))
      .sort((a, b) => Number(b) - Number(a));
    for (const v of versions) {
      const dir = join(debianRoot, v, 'bin');
      if (findBinary(join(dir, 'initdb')) && findBinary(join(dir, 'postgres'))) return dir;
    }
  } catch {
    // no Debian layout
  }
  return undefined;
}

/**
 * For `describe(name, { skip: needPostgres() }, …)`: `false` when PostgreSQL is there, a skip
 * message when not, and throws `MUSTER_MISSING_BINARY` when not and services are required.
 */
export function needPostgres(
  env: NodeJS.ProcessEnv = process.env,
  debianRoot = '/usr/lib/postgresql',
): false | string {
  if (findPostgresBinDir(env, debianRoot) !== undefined) return false;
  const message = `PostgreSQL (initdb, postgres) was not found; install it with: ${POSTGRES_INSTALL_HINT}`;
  if (servicesRequired(env)) {
    throw new MusterError(
      'MUSTER_MISSING_BINARY',
      `${message} (MUSTER_REQUIRE_SERVICES=1 forbids skipping)`,
      {
        details: { binary: 'postgres' },
      },
    );
  }
  process.stderr.write(`# SKIP: ${message}\n`);
  return `${message} (skipped)`;
}

export interface PostgresServer {
  readonly port: number;
  readonly dataDir: string;
  /** `postgres://muster@127.0.0.1:<port>/postgres` (the maintenance database). */
  readonly adminUrl: string;
  readonly running: boolean;
  /** The postmaster's process id while running (its backends are its children), else `undefined`. */
  readonly pid: number | undefined;
  /** Creates a fresh database and returns its URL (`?schema=` may be appended by the caller). */
  createDatabase(name?: string): Promise<string>;
  /** SIGINT (fast shutdown: open transactions roll back) and wait; SIGKILL after 5 s. */
  stop(): Promise<void>;
  /** SIGKILL the postmaster and every backend (the whole group) now. */
  kill(): Promise<void>;
  /** Starts it again on the same port and data (after stop or kill); waits until ready. */
  restart(): Promise<void>;
  logTail(lines?: number): string;
  /**
   * Turns TLS on (`ssl=on` with this certificate and key, copied next to the data directory) and puts
   * `hba` lines (`pg_hba.conf` syntax) before the harness's `trust` rules, then reloads the
   * configuration and waits until new connections see it.
   */
  configureTls(options: { certFile: string; keyFile: string; hba?: readonly string[] }): Promise<void>;
  /** Kills the server and removes its directory; idempotent. */
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

const live = new Set<ProcessHandle>();
const liveRoots = new Set<string>();
let hooksInstalled = false;
function installExitHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.on('exit', () => {
    for (const child of live) void child.kill();
    for (const root of liveRoots) rmSync(root, { recursive: true, force: true, maxRetries: 3 });
  });
}

/** argv prefix that drops root to nobody (initdb and postgres refuse root). */
function asUnprivileged(): string[] {
  if (process.getuid?.() !== 0) return [];
  return ['setpriv', `--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups'];
}

class Server implements PostgresServer {
  readonly port: number;
  readonly dataDir: string;
  readonly adminUrl: string;
  readonly #root: string;
  readonly #bin: string;
  readonly #logFile: string;
  readonly #durable: boolean;
  #child: ProcessHandle | undefined;
  #closed: Promise<void> | undefined;

  constructor(root: string, bin: string, port: number, durable: boolean) {
    this.#root = root;
    this.#bin = bin;
    this.#durable = durable;
    this.port = port;
    this.dataDir = join(root, 'data');
    this.#logFile = join(root, 'postgres.log');
    this.adminUrl = `postgres://${TEST_PG_USER}@127.0.0.1:${port}/postgres`;
  }

  get running(): boolean {
    return this.#child !== undefined;
  }

  get pid(): number | undefined {
    return this.#child?.pid;
  }

  async initdb(): Promise<void> {
    const log = openSync(this.#logFile, 'a');
    let child: ProcessHandle;
    try {
      child = await spawnProcess({
        command: [
          ...asUnprivileged(),
          join(this.#bin, 'initdb'),
          '-D',
          this.dataDir,
          '-U',
          TEST_PG_USER,
          '--auth=trust',
          '--encoding=UTF8',
          '--locale=C',
          '--no-sync',
        ],
        label: 'postgres/initdb',
        stdout: log,
        stderr: log,
      });
    } finally {
      closeSync(log);
    }
    const exit = await child.exited;
    if (exit.code !== 0) throw new Error(`initdb failed (${JSON.stringify(exit)})\n${this.logTail()}`);
  }

  async start(readyTimeoutMs = 30_000): Promise<void> {
    if (this.#child !== undefined) return;
    installExitHooks();
    const log = openSync(this.#logFile, 'a');
    let child: ProcessHandle;
    try {
      child = await spawnProcess({
        command: [
          ...asUnprivileged(),
          join(this.#bin, 'postgres'),
          '-D',
          this.dataDir,
          '-p',
          String(this.port),
          '-k',
          this.#root,
          '-c',
          'listen_addresses=127.0.0.1',
          '-c',
          'max_connections=200',
          // No fsync by default: a killed server loses nothing (the OS keeps its writes); only a machine
          // crash would. Benchmarks ask for `durable`, as etcd and muster serve fsync every commit.
          '-c',
          `fsync=${this.#durable ? 'on' : 'off'}`,
          '-c',
          'log_min_messages=warning',
        ],
        label: 'postgres',
        stdout: log,
        stderr: log,
        stopSignal: 'SIGINT',
        grace: STOP_GRACE_MS,
      });
    } finally {
      closeSync(log);
    }
    live.add(child);
    this.#child = child;
    void child.exited.then(() => {
      live.delete(child);
      if (this.#child === child) this.#child = undefined;
    });
    const deadline = Date.now() + readyTimeoutMs;
    for (;;) {
      try {
        await adminQuery(this.adminUrl, 'SELECT 1');
        return;
      } catch (err) {
        if (this.#child !== child)
          throw new Error(`postgres exited before it was ready\n${this.logTail()}`, { cause: err });
        if (Date.now() > deadline)
          throw new Error(`postgres not ready within ${readyTimeoutMs} ms\n${this.logTail()}`, {
            cause: err,
          });
        await sleep(50);
      }
    }
  }

  async createDatabase(name = `t_${randomBytes(4).toString('hex')}`): Promise<string> {
    if (!/^[a-z_][a-z0-9_]*$/.test(name)) throw new Error(`bad database name ${name}`);
    await adminQuery(this.adminUrl, `CREATE DATABASE ${name}`);
    return `postgres://${TEST_PG_USER}@127.0.0.1:${this.port}/${name}`;
  }

  async stop(): Promise<void> {
    await this.#child?.stop();
  }

  async kill(): Promise<void> {
    await this.#child?.kill();
  }

  async restart(): Promise<void> {
    await this.kill();
    await this.start();
  }

  async configureTls(options: { certFile: string; keyFile: string; hba?: readonly string[] }): Promise<void> {
    const cert = join(this.#root, 'server.crt');
    const key = join(this.#root, 'server.key');
    copyFileSync(options.certFile, cert);
    copyFileSync(options.keyFile, key);
    // PostgreSQL refuses a key that others can read, or that is not its own user's.
    chmodSync(key, 0o600);
    if (process.getuid?.() === 0) {
      chownSync(cert, NOBODY, NOBODY);
      chownSync(key, NOBODY, NOBODY);
    }
    if (options.hba !== undefined) {
      const file = join(this.dataDir, 'pg_hba.conf');
      writeFileSync(file, `${options.hba.join('\n')}\n${readFileSync(file, 'utf8')}`);
    }
    // ALTER SYSTEM refuses to run in a (even implicit) transaction block: one statement per call.
    for (const sql of [
      `ALTER SYSTEM SET ssl_cert_file = '${cert}'`,
      `ALTER SYSTEM SET ssl_key_file = '${key}'`,
      'ALTER SYSTEM SET ssl = on',
      'SELECT pg_reload_conf()',
    ])
      await adminQuery(this.adminUrl, sql);
    // The postmaster reloads on SIGHUP, a moment later; a new connection that sees ssl = on was forked
    // after the reload, so it (and every later one) sees the new pg_hba.conf too.
    const deadline = Date.now() + 10_000;
    while ((await adminQuery<{ ssl: string }>(this.adminUrl, 'SHOW ssl'))[0]?.ssl !== 'on') {
      if (Date.now() > deadline) throw new Error(`postgres did not turn TLS on\n${this.logTail()}`);
      await sleep(20);
    }
  }

  logTail(lines = 30): string {
    try {
      return readFileSync(this.#logFile, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
    } catch {
      return '(no log)';
    }
  }

  close(): Promise<void> {
    this.#closed ??= (async () => {
      await this.kill();
      rmSync(this.#root, { recursive: true, force: true });
      liveRoots.delete(this.#root);
    })();
    return this.#closed;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

const ROOT_PREFIX = 'muster-pg-';
const OWNER_FILE = 'owner.pid';

/**
 * Removes the directories of servers whose test process died without `close()` (SIGKILL, OOM). Their
 * servers are already gone: the process kernel kills a child's group when its parent dies.
 */
export function sweepPostgresOrphans(): void {
  let entries: string[];
  try {
    entries = readdirSync(tmpdir()).filter((name) => name.startsWith(ROOT_PREFIX));
  } catch {
    return;
  }
  for (const name of entries) {
    const root = join(tmpdir(), name);
    try {
      const owner = Number(readFileSync(join(root, OWNER_FILE), 'utf8'));
      if (Number.isInteger(owner) && owner > 0 && !isProcessAlive(owner))
        rmSync(root, { recursive: true, force: true });
    } catch {
      // being created, or not ours
    }
  }
}

/** Options of {@link startPostgres}. */
export interface StartPostgresOptions {
  /** How long to wait for the server to accept connections. Default 30 s. */
  readyTimeoutMs?: number;
  /**
   * `fsync=on`, as a production server runs (for benchmarks beside etcd and muster serve, which
   * fsync every commit). Default false: tests run faster, and a killed server still loses nothing.
   */
  durable?: boolean;
}

/**
 * Initialises and starts a PostgreSQL server on a free loopback port. Throws `MUSTER_MISSING_BINARY`
 * when PostgreSQL is not installed; a server that does not become ready is killed before the error.
 */
export async function startPostgres(options: StartPostgresOptions = {}): Promise<PostgresServer> {
  const bin = findPostgresBinDir();
  if (bin === undefined) {
    throw new MusterError('MUSTER_MISSING_BINARY', `PostgreSQL was not found; ${POSTGRES_INSTALL_HINT}`, {
      details: { binary: 'postgres' },
    });
  }
  sweepPostgresOrphans();
  const root = mkdtempSync(join(tmpdir(), ROOT_PREFIX));
  writeFileSync(join(root, OWNER_FILE), String(process.pid));
  liveRoots.add(root);
  mkdirSync(join(root, 'data'), { mode: 0o700 });
  if (process.getuid?.() === 0) {
    chownSync(root, NOBODY, NOBODY);
    chownSync(join(root, 'data'), NOBODY, NOBODY);
  }
  const server = new Server(root, bin, await freePort(), options.durable === true);
  try {
    await server.initdb();
    await server.start(options.readyTimeoutMs);
    return server;
  } catch (err) {
    await server.close();
    throw err;
  }
}
