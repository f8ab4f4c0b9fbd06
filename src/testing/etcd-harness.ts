/**
 * Starts real etcd servers for tests, and breaks them.
 *
 * `startEtcd({ members: 1 | 3 })` runs the `etcd` binary from PATH on free loopback ports (member i
 * on 127.0.0.(i+1)) with temporary data directories, waits until the cluster has a leader, and
 * returns a handle to stop, `kill -9`, pause (`SIGSTOP`), resume and restart each member and to find
 * the leader. Members run through the process kernel (`src/process/`), so every etcd started here dies
 * with the test process, even when it is SIGKILLed; they are also killed when the test process exits,
 * is interrupted (SIGINT, SIGTERM) or calls `close()`; data directories are removed by `close()`, or
 * by the next start after a test process died without cleaning up.
 *
 * Suites guard themselves with `needBinary('etcd', ETCD_INSTALL_HINT)` so they are skipped (or fail
 * under `MUSTER_REQUIRE_SERVICES=1`) where etcd is missing.
 */
import { randomBytes } from 'node:crypto';
import {
  closeSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { request } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MusterError } from '../errors.js';
import { freePort } from '../util/net.js';
import { cleanUpOnInterrupt } from '../daemon/index.js';
import { type ProcessHandle, spawnProcess } from '../process/index.js';
import { findBinary } from './services.js';
import { isProcessAlive } from '../util/process.js';
import { setTimeout as sleep } from 'node:timers/promises';

/** What to tell a developer without etcd. */
export const ETCD_INSTALL_HINT =
  'apt-get install etcd-server (Debian/Ubuntu), or put an etcd 3.4+ binary on PATH';

/**
 * 250 ms: etcd 3.4.23 (Debian's) answers watch progress requests unsafely (etcd#15220), so the etcd
 * engine proves progress from the periodic notifications; a short interval keeps that prompt.
 */
export const TEST_PROGRESS_NOTIFY_INTERVAL = '250ms';

export interface StartEtcdOptions {
  /** 1 or 3 members. Default: 1. */
  members?: 1 | 3;
  /** The etcd binary. Default: `etcd` from PATH. */
  binary?: string;
  /** Raft heartbeat in ms. Default: 100 (etcd's). */
  heartbeatMs?: number;
  /** Raft election timeout in ms. Default: 1000 (etcd's); shorter ones flap on a busy 2-core machine. */
  electionMs?: number;
  /** Extra command-line flags for every member. */
  extraArgs?: readonly string[];
  /** How long to wait for a leader. Default: 30 s. */
  readyTimeoutMs?: number;
  /**
   * Serve clients over TLS with these files (peers stay plain); with `clientCertAuth`, clients
   * must present a certificate signed by `caFile` (the harness's own probes use `clientCertFile`).
   * See `makeTestCertificates`. Default: plain text.
   */
  tls?: {
    certFile: string;
    keyFile: string;
    caFile: string;
    clientCertAuth?: boolean;
    clientCertFile?: string;
    clientKeyFile?: string;
  };
}

export interface EtcdMember {
  readonly name: string;
  /** `127.0.0.x:port` of the client listener. */
  readonly endpoint: string;
  readonly clientUrl: string;
  readonly peerUrl: string;
  readonly dataDir: string;
  /** The process id while running, else `undefined`. */
  readonly pid: number | undefined;
  readonly running: boolean;
  /** SIGTERM and wait for exit (SIGKILL after 5 s). */
  stop(): Promise<void>;
  /** SIGKILL and wait for exit. */
  kill(): Promise<void>;
  /** SIGSTOP: the process stays, its sockets stay open, it answers nothing. */
  pause(): void;
  /** SIGCONT after {@link pause}. */
  resume(): void;
  /** Starts the member again on the same ports and data (after stop or kill). */
  restart(): Promise<void>;
  /** The last lines of the member's log. */
  logTail(lines?: number): string;
}

export interface EtcdCluster {
  readonly members: readonly EtcdMember[];
  /** Client endpoints, `127.0.0.x:port`. */
  readonly endpoints: readonly string[];
  /** `etcd://…` (or `etcds://…` with TLS) naming every member. */
  readonly url: string;
  /** The current leader (asks the running members); rejects if none within `timeoutMs`. */
  leader(timeoutMs?: number): Promise<EtcdMember>;
  /** Waits until some running member reports a leader and is healthy. */
  waitReady(timeoutMs?: number): Promise<void>;
  /** Kills every member and removes the data directories; idempotent. */
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/** 5 s between SIGTERM and SIGKILL when a member is stopped; etcd stops in well under a second. */
const STOP_GRACE_MS = 5000;

// ---- process clean-up ----------------------------------------------------------------------------

const live = new Set<ProcessHandle>();
/** Data directories of clusters not yet closed; removed on exit too. */
const liveRoots = new Set<string>();
let hooksInstalled = false;

function killAllNow(): void {
  // kill() sends SIGKILL to the group synchronously; there is no time to wait for it here.
  for (const child of live) void child.kill();
  live.clear();
  for (const root of liveRoots) rmSync(root, { recursive: true, force: true, maxRetries: 3 });
  liveRoots.clear();
}

function installExitHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.on('exit', killAllNow);
  // Interrupted outside a daemon (a test run): kill the servers, then end as the signal says.
  cleanUpOnInterrupt(killAllNow);
}

// ---- orphans: clusters whose test process died without cleaning up (SIGKILL, OOM) ----------------

const ROOT_PREFIX = 'muster-etcd-';
const OWNER_FILE = 'owner.pid';

/** Every process id (Linux `/proc`; elsewhere none, and orphans are only removed from disk). */
function processIds(): string[] {
  try {
    return readdirSync('/proc').filter((p) => /^\d+$/.test(p));
  } catch {
    return [];
  }
}

/**
 * Kills the etcd processes of harness directories whose owner process is gone, and removes the
 * directories. An etcd is recognised by its command line naming the directory, so nothing else is
 * ever signalled.
 */
export function sweepOrphans(): void {
  let entries: string[];
  try {
    entries = readdirSync(tmpdir()).filter((name) => name.startsWith(ROOT_PREFIX));
  } catch {
    return;
  }
  for (const name of entries) {
    const root = join(tmpdir(), name);
    let owner: number;
    try {
      owner = Number(readFileSync(join(root, OWNER_FILE), 'utf8'));
    } catch {
      continue; // being created, or not ours
    }
    if (!Number.isInteger(owner) || owner <= 0 || isProcessAlive(owner)) continue;
    for (const pid of processIds()) {
      try {
        const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
        if (cmdline.includes(`${root}/`) && cmdline.split('\0')[0]?.endsWith('etcd'))
          process.kill(Number(pid), 'SIGKILL');
      } catch {
        // gone meanwhile, or not readable
      }
    }
    rmSync(root, { recursive: true, force: true });
  }
}

// ---- ports ---------------------------------------------------------------------------------------

export { freePort };

// ---- HTTP probes ---------------------------------------------------------------------------------

type Tls = StartEtcdOptions['tls'];

function httpJson(url: string, body: string | undefined, timeoutMs: number, tls: Tls): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const options = { method: body === undefined ? 'GET' : 'POST', timeout: timeoutMs };
    const send = tls === undefined ? request : httpsRequest;
    const tlsOptions =
      tls === undefined
        ? {}
        : {
            ca: readFileSync(tls.caFile),
            ...(tls.clientCertFile ? { cert: readFileSync(tls.clientCertFile) } : {}),
            ...(tls.clientKeyFile ? { key: readFileSync(tls.clientKeyFile) } : {}),
          };
    const req = send(url, { ...options, ...tlsOptions }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (text += chunk));
      res.on('end', () => {
        try {
          resolve(JSON.parse(text));
        } catch (err) {
          // eslint-disable-next-line @typescript-eslint/prefer-promise-reject-errors
          reject(err);
        }
      });
    });
    req.on('timeout', () => req.destroy(new Error(`timeout after ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end(body);
  });
}

// ---- members -------------------------------------------------------------------------------------

class Member implements EtcdMember {
  readonly name: string;
  readonly endpoint: string;
  readonly clientUrl: string;
  readonly peerUrl: string;
  readonly dataDir: string;
  readonly #binary: string;
  readonly #args: string[];
  readonly #logFile: string;
  #child: ProcessHandle | undefined;
  #paused = false;
  readonly #tls: Tls;

  constructor(
    name: string,
    host: string,
    clientPort: number,
    peerPort: number,
    dir: string,
    binary: string,
    tls: Tls,
  ) {
    this.name = name;
    this.#tls = tls;
    this.endpoint = `${host}:${clientPort}`;
    this.clientUrl = `${tls ? 'https' : 'http'}://${host}:${clientPort}`;
    this.peerUrl = `http://${host}:${peerPort}`;
    this.dataDir = join(dir, 'data');
    this.#logFile = join(dir, 'etcd.log');
    this.#binary = binary;
    this.#args = [];
  }

  configure(args: string[]): void {
    this.#args.push(...args);
  }

  get pid(): number | undefined {
    return this.#child?.pid;
  }

  get running(): boolean {
    return this.#child !== undefined;
  }

  async start(): Promise<void> {
    if (this.#child !== undefined) return;
    installExitHooks();
    const log = openSync(this.#logFile, 'a');
    let child: ProcessHandle;
    try {
      child = await spawnProcess({
        command: [
          this.#binary,
          '--name',
          this.name,
          '--data-dir',
          this.dataDir,
          '--listen-client-urls',
          this.clientUrl,
          '--advertise-client-urls',
          this.clientUrl,
          '--listen-peer-urls',
          this.peerUrl,
          '--initial-advertise-peer-urls',
          this.peerUrl,
          ...this.#args,
        ],
        label: `etcd/${this.name}`,
        stdout: log,
        stderr: log,
        grace: STOP_GRACE_MS,
      });
    } finally {
      closeSync(log);
    }
    live.add(child);
    this.#child = child;
    this.#paused = false;
    void child.exited.then(() => {
      live.delete(child);
      if (this.#child === child) this.#child = undefined;
    });
  }

  async stop(): Promise<void> {
    // SIGTERM (then SIGCONT, so a paused member acts on it); SIGKILL after 5 s.
    await this.#child?.stop();
  }

  async kill(): Promise<void> {
    await this.#child?.kill();
  }

  pause(): void {
    if (this.#child === undefined)
      throw new MusterError('MUSTER_INVALID_ARGUMENT', `etcd member ${this.name} is not running`);
    this.#child.signal('SIGSTOP');
    this.#paused = true;
  }

  resume(): void {
    if (this.#child === undefined) return;
    this.#child.signal('SIGCONT');
    this.#paused = false;
  }

  async restart(): Promise<void> {
    await this.kill();
    await this.start();
  }

  logTail(lines = 30): string {
    try {
      return readFileSync(this.#logFile, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
    } catch {
      return '(no log)';
    }
  }

  /** The member's view: its own id and the leader's id, or `undefined` when it does not answer. */
  async status(timeoutMs: number): Promise<{ memberId: string; leader: string } | undefined> {
    if (this.#child === undefined || this.#paused) return undefined;
    try {
      const s = (await httpJson(`${this.clientUrl}/v3/maintenance/status`, '{}', timeoutMs, this.#tls)) as {
        header?: { member_id?: string };
        leader?: string;
      };
      if (s.header?.member_id === undefined || s.leader === undefined || s.leader === '0') return undefined;
      return { memberId: s.header.member_id, leader: s.leader };
    } catch {
      return undefined;
    }
  }
}

class Cluster implements EtcdCluster {
  readonly members: readonly Member[];
  readonly #root: string;
  readonly #scheme: string;
  #closed: Promise<void> | undefined;

  constructor(members: Member[], root: string, tls: boolean) {
    this.members = members;
    this.#root = root;
    this.#scheme = tls ? 'etcds' : 'etcd';
  }

  get endpoints(): readonly string[] {
    return this.members.map((m) => m.endpoint);
  }

  get url(): string {
    return `${this.#scheme}://${this.endpoints.join(',')}`;
  }

  async leader(timeoutMs = 15_000): Promise<EtcdMember> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const views = await Promise.all(this.members.map(async (m) => ({ m, s: await m.status(1000) })));
      for (const { s } of views) {
        if (s === undefined) continue;
        const leader = views.find((v) => v.s?.memberId === s.leader);
        if (leader !== undefined) return leader.m;
      }
      if (Date.now() > deadline) {
        throw new Error(
          `no etcd leader within ${timeoutMs} ms\n${this.members.map((m) => `--- ${m.name}\n${m.logTail(10)}`).join('\n')}`,
        );
      }
      await sleep(100);
    }
  }

  async waitReady(timeoutMs = 30_000): Promise<void> {
    await this.leader(timeoutMs);
  }

  close(): Promise<void> {
    this.#closed ??= (async () => {
      await Promise.all(this.members.map((m) => m.kill()));
      rmSync(this.#root, { recursive: true, force: true });
      liveRoots.delete(this.#root);
    })();
    return this.#closed;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/**
 * Starts a single etcd or a 3-member cluster and waits for a leader. Throws `MUSTER_MISSING_BINARY`
 * when etcd is not on PATH; a cluster that elects no leader in time is killed before the error.
 */
export async function startEtcd(options: StartEtcdOptions = {}): Promise<EtcdCluster> {
  const binary = findBinary(options.binary ?? 'etcd');
  if (binary === undefined) {
    throw new MusterError('MUSTER_MISSING_BINARY', `'etcd' is not on PATH; ${ETCD_INSTALL_HINT}`, {
      details: { binary: 'etcd' },
    });
  }
  const count = options.members ?? 1;
  sweepOrphans();
  const root = mkdtempSync(join(tmpdir(), ROOT_PREFIX));
  writeFileSync(join(root, OWNER_FILE), String(process.pid));
  liveRoots.add(root);
  const members: Member[] = [];
  for (let i = 0; i < count; i++) {
    const host = `127.0.0.${i + 1}`;
    const clientPort = await freePort(host);
    let peerPort = await freePort(host);
    while (peerPort === clientPort) peerPort = await freePort(host);
    const dir = join(root, `m${i}`);
    mkdirSync(dir, { recursive: true });
    members.push(new Member(`m${i}`, host, clientPort, peerPort, dir, binary, options.tls));
  }
  const token = `muster-${randomBytes(4).toString('hex')}`;
  const initialCluster = members.map((m) => `${m.name}=${m.peerUrl}`).join(',');
  for (const m of members) {
    m.configure([
      '--initial-cluster',
      initialCluster,
      '--initial-cluster-state',
      'new',
      '--initial-cluster-token',
      token,
      '--heartbeat-interval',
      String(options.heartbeatMs ?? 100),
      '--election-timeout',
      String(options.electionMs ?? 1000),
      '--experimental-watch-progress-notify-interval',
      TEST_PROGRESS_NOTIFY_INTERVAL,
      '--logger',
      'zap',
      '--log-level',
      'warn',
      ...(options.tls === undefined
        ? []
        : [
            '--cert-file',
            options.tls.certFile,
            '--key-file',
            options.tls.keyFile,
            '--trusted-ca-file',
            options.tls.caFile,
            ...(options.tls.clientCertAuth === true ? ['--client-cert-auth'] : []),
          ]),
      ...(options.extraArgs ?? []),
    ]);
  }
  const cluster = new Cluster(members, root, options.tls !== undefined);
  try {
    for (const m of members) await m.start();
    await cluster.waitReady(options.readyTimeoutMs ?? 30_000);
    return cluster;
  } catch (err) {
    await cluster.close();
    throw err;
  }
}
