/**
 * TEMPORARY stand-in for the process kernel (Contract A, `src/process/`), deleted when the kernel
 * lands. Same interface; no death-of-parent guard beyond `setpriv --pdeathsig` on the leader.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import { MusterError } from '../errors.js';
import { type Duration, toMillis } from '../util/duration.js';

export interface SpawnOptions {
  readonly command: readonly string[];
  readonly env?: Readonly<Record<string, string>>;
  readonly envReplace?: boolean;
  readonly cwd?: string;
  readonly label?: string;
  readonly onLine?: (stream: 'stdout' | 'stderr', line: string) => void;
  readonly readyFd?: boolean;
  readonly stopSignal?: NodeJS.Signals;
  readonly grace?: Duration;
  readonly registry?: ProcessRegistry;
}
export interface ExitInfo {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly at: number;
}
export interface ProcessHandle {
  readonly pid: number;
  readonly pgid: number;
  readonly startTime: string;
  readonly exited: Promise<ExitInfo>;
  readonly ready: Promise<void> | undefined;
  stop(options?: { signal?: NodeJS.Signals; grace?: Duration }): Promise<ExitInfo>;
  kill(): Promise<ExitInfo>;
}

let setprivPath: string | null | undefined;
function setpriv(): string | null {
  if (setprivPath === undefined) {
    const r = spawnSync('sh', ['-c', 'command -v setpriv'], { encoding: 'utf8' });
    setprivPath = r.status === 0 ? r.stdout.trim() : null;
  }
  return setprivPath;
}

function startTimeOf(pid: number): string {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? '';
  } catch {
    return '';
  }
}

function groupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function waitGroupGone(pgid: number): Promise<void> {
  while (groupAlive(pgid)) await new Promise((r) => setTimeout(r, 5));
}

function lines(stream: Readable | null, fn: ((line: string) => void) | undefined): void {
  if (stream === null) return;
  if (fn === undefined) {
    stream.resume();
    return;
  }
  createInterface({ input: stream, crlfDelay: Infinity }).on('line', fn);
}

export async function spawnProcess(options: SpawnOptions): Promise<ProcessHandle> {
  const [file, ...args] = options.command;
  if (file === undefined) throw new MusterError('MUSTER_INVALID_ARGUMENT', 'command is empty');
  const sp = setpriv();
  const argv = sp ? [sp, '--pdeathsig', 'SIGKILL', '--', file, ...args] : [file, ...args];
  // setpriv exec's the command, so ENOENT would show as its exit 127: check the command first.
  if (sp) {
    const r = file.includes('/')
      ? spawnSync('test', ['-x', file])
      : spawnSync('sh', ['-c', 'command -v "$1"', 'sh', file], { encoding: 'utf8' });
    if (r.status !== 0) {
      throw new MusterError('MUSTER_SPAWN_FAILED', `cannot start '${file}': command not found (ENOENT)`, {
        details: { command: [...options.command], reason: 'ENOENT' },
      });
    }
  }
  const env = options.envReplace ? { ...options.env } : { ...process.env, ...options.env };
  const child = spawn(argv[0] as string, argv.slice(1), {
    cwd: options.cwd,
    env,
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe', options.readyFd ? 'pipe' : 'ignore'],
  });
  await new Promise<void>((resolve, reject) => {
    child.once('spawn', resolve);
    child.once('error', (err: NodeJS.ErrnoException) =>
      reject(
        new MusterError('MUSTER_SPAWN_FAILED', `cannot start '${file}': ${err.message}`, {
          cause: err,
          details: { command: [...options.command], reason: err.code },
        }),
      ),
    );
  });
  const pid = child.pid as number;
  const startTime = startTimeOf(pid);
  const rec = options.registry?.add(pid, startTime, options.label ?? '');
  lines(child.stdout, options.onLine ? (l) => options.onLine?.('stdout', l) : undefined);
  lines(child.stderr, options.onLine ? (l) => options.onLine?.('stderr', l) : undefined);
  const exited = new Promise<ExitInfo>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal, at: Date.now() })),
  );
  let ready: Promise<void> | undefined;
  if (options.readyFd) {
    const fd3 = child.stdio[3] as Readable;
    ready = new Promise<void>((resolve, reject) => {
      fd3.on('data', (chunk: Buffer) => {
        if (chunk.includes(10)) resolve();
      });
      fd3.on('error', () => undefined);
      void exited.then(() => reject(new MusterError('MUSTER_SPAWN_FAILED', 'exited before it was ready')));
    });
    ready.catch(() => undefined);
  }
  const gone = async (): Promise<ExitInfo> => {
    const info = await exited;
    await waitGroupGone(pid);
    if (rec) options.registry?.remove(rec);
    return info;
  };
  let stopping: Promise<ExitInfo> | undefined;
  const sendGroup = (sig: NodeJS.Signals): void => {
    try {
      process.kill(-pid, sig);
    } catch {
      // gone
    }
  };
  return {
    pid,
    pgid: pid,
    startTime,
    exited,
    ready,
    stop(o = {}) {
      stopping ??= (async () => {
        const graceMs = toMillis(o.grace ?? options.grace ?? 10_000);
        sendGroup(o.signal ?? options.stopSignal ?? 'SIGTERM');
        const timer = setTimeout(() => sendGroup('SIGKILL'), graceMs);
        // After the leader exits, the rest of the group gets SIGKILL at once.
        await exited;
        clearTimeout(timer);
        sendGroup('SIGKILL');
        return gone();
      })();
      return stopping;
    },
    kill() {
      sendGroup('SIGKILL');
      return gone();
    },
  };
}

/** Records of live children, one file each, swept at start. */
export class ProcessRegistry {
  readonly #dir: string;
  #n = 0;
  constructor(dir: string) {
    this.#dir = dir;
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  }
  add(pid: number, startTime: string, label: string): string {
    const name = `${pid}-${++this.#n}.json`;
    writeFileSync(join(this.#dir, name), JSON.stringify({ pid, pgid: pid, startTime, label }));
    return name;
  }
  remove(name: string): void {
    rmSync(join(this.#dir, name), { force: true });
  }
  async sweep(): Promise<{ killed: number; stale: number }> {
    let killed = 0;
    let stale = 0;
    for (const name of readdirSync(this.#dir)) {
      if (!name.endsWith('.json')) continue;
      try {
        const r = JSON.parse(readFileSync(join(this.#dir, name), 'utf8')) as {
          pgid: number;
          pid: number;
          startTime: string;
        };
        if (groupAlive(r.pgid) && (startTimeOf(r.pid) === r.startTime || startTimeOf(r.pid) === '')) {
          process.kill(-r.pgid, 'SIGKILL');
          await waitGroupGone(r.pgid);
          killed++;
        } else stale++;
      } catch {
        stale++;
      }
      rmSync(join(this.#dir, name), { force: true });
    }
    return { killed, stale };
  }
}
