/**
 * `spawnProcess`: a child in its own process group, armed against the death of this process.
 *
 * The child runs `[setpriv --pdeathsig KILL --] /bin/sh -c WRAPPER muster-spawn PROGRAM ARGS…`; every
 * step `exec`s the next, so the pid (= pgid, = start time) is the command's from the first instant.
 * The wrapper waits for one line on fd 4 before it `exec`s the command; this process writes that line
 * only after the guard and the registry know the group. If this process dies before, fd 4 reads EOF
 * and the wrapper exits without running the command — so no window exists in which the command (or
 * anything it forks) runs unknown to the guard.
 */
import { type ChildProcess, spawn, type StdioOptions } from 'node:child_process';
import { basename } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { isMainThread } from 'node:worker_threads';
import { invalidArgument, MusterError } from '../errors.js';
import { type Duration, toMillis } from '../util/duration.js';
import { checkCwd, resolveProgram, show, spawnFailed } from './command.js';
import { readStartTime, signalGroup, waitGroupGone } from './group.js';
import { guard, setprivCommand } from './guard.js';
import { readLines } from './lines.js';
import type { ExitInfo, OutputTarget, ProcessHandle, ProcessState, SpawnOptions } from './types.js';

/** 10 s: systemd's TimeoutStopSec is 90 s, Kubernetes' grace 30 s; a supervisor wants it sooner. */
export const DEFAULT_GRACE_MS = 10_000;
/** SIGTERM, as systemd, Kubernetes and Docker send first. */
export const DEFAULT_STOP_SIGNAL: NodeJS.Signals = 'SIGTERM';
/** 20 lines: enough to say why a child died in an error message or a log line. */
export const TAIL_LINES = 20;
/**
 * 1 s: after the group is gone its output pipes reach EOF at once, unless a process that left the
 * group (setsid) still holds them; that one is not waited for.
 */
export const OUTPUT_DRAIN_MS = 1000;

/** Waits for one line on fd 4 (the go-ahead), closes it, becomes the command. */
export const WRAPPER = 'read -r _ <&4 || exit 125; exec 4<&-; exec "$@"';

/**
 * Starts `options.command` in its own process group. Resolves once the OS has spawned it; rejects
 * `MUSTER_SPAWN_FAILED` (command missing or not executable, bad cwd, EAGAIN) naming the command, or
 * `MUSTER_INVALID_ARGUMENT` for bad options (also when called from a worker thread: the death signal
 * follows the spawning thread, so children are spawned from the main thread only).
 */
export async function spawnProcess(options: SpawnOptions): Promise<ProcessHandle> {
  const command = checkCommand(options.command);
  if (!isMainThread)
    throw invalidArgument('spawnProcess must be called from the main thread (the death signal follows it)');
  const graceMs = toMillis(options.grace ?? DEFAULT_GRACE_MS, 'grace');
  const stopSignal = options.stopSignal ?? DEFAULT_STOP_SIGNAL;
  const env: Record<string, string | undefined> =
    options.envReplace === true ? { ...options.env } : { ...process.env, ...options.env };
  const cwd = options.cwd ?? process.cwd();
  checkCwd(command, cwd);
  const program = resolveProgram(command, cwd, env.PATH);
  const setpriv = setprivCommand();
  const argv = [
    ...(setpriv === null ? [] : [setpriv, '--pdeathsig', 'KILL', '--']),
    ...['/bin/sh', '-c', WRAPPER, 'muster-spawn', program, ...command.slice(1)],
  ];
  const stdio: StdioOptions = [
    'ignore',
    stdioOf(options.stdout ?? 'lines'),
    stdioOf(options.stderr ?? 'lines'),
    options.readyFd === true ? 'pipe' : 'ignore',
    'pipe',
    ...(options.ipc === undefined ? [] : ['ipc' as const]),
  ];
  let child: ChildProcess;
  try {
    child = spawn(argv[0] as string, argv.slice(1), {
      cwd,
      env,
      stdio,
      detached: true,
      ...(options.ipc === undefined ? {} : { serialization: options.ipc }),
    });
  } catch (err) {
    throw spawnFailed(command, (err as Error).message, (err as NodeJS.ErrnoException).code, err);
  }
  const pid = child.pid;
  if (pid === undefined) {
    const err = await new Promise<Error>((resolve) => child.once('error', resolve));
    throw spawnFailed(command, err.message, (err as NodeJS.ErrnoException).code, err);
  }
  // From here the wrapper waits on fd 4: tell the guard and the registry, then let it run.
  guard.add(pid);
  const startTime = readStartTime(pid) ?? '';
  const label = options.label ?? basename(program);
  const go = child.stdio[4] as Writable;
  try {
    options.registry?.add({ pid, pgid: pid, startTime, label, command, startedAt: Date.now() });
  } catch (err) {
    go.destroy();
    signalGroup(pid, 'SIGKILL');
    await waitGroupGone(pid);
    guard.remove(pid);
    throw new MusterError('MUSTER_SPAWN_FAILED', `could not record ${show(command)} in the registry`, {
      cause: err,
      details: { command: [...command], dir: options.registry?.dir },
    });
  }
  go.on('error', () => undefined);
  go.end('\n');
  return new ChildHandle(child, { pid, startTime, label, command, graceMs, stopSignal, options });
}

function checkCommand(command: unknown): readonly string[] {
  if (
    !Array.isArray(command) ||
    command.length === 0 ||
    !command.every((a) => typeof a === 'string') ||
    command[0] === ''
  ) {
    throw invalidArgument(
      "spawnProcess needs command: a non-empty array of strings (argv, no shell), e.g. ['sleep', '10']",
    );
  }
  return command;
}

function stdioOf(target: OutputTarget): 'pipe' | 'inherit' | 'ignore' | number {
  if (target === 'lines') return 'pipe';
  if (target === 'inherit' || target === 'ignore') return target;
  if (Number.isInteger(target) && target >= 0) return target;
  throw invalidArgument(
    `stdout/stderr must be 'lines', 'inherit', 'ignore' or a file descriptor, got ${String(target)}`,
  );
}

interface HandleInit {
  readonly pid: number;
  readonly startTime: string;
  readonly label: string;
  readonly command: readonly string[];
  readonly graceMs: number;
  readonly stopSignal: NodeJS.Signals;
  readonly options: SpawnOptions;
}

class ChildHandle implements ProcessHandle {
  readonly pid: number;
  readonly pgid: number;
  readonly startTime: string;
  readonly label: string;
  readonly exited: Promise<ExitInfo>;
  readonly gone: Promise<ExitInfo>;
  readonly ready: Promise<void> | undefined;
  readonly #child: ChildProcess;
  readonly #init: HandleInit;
  readonly #tail: string[] = [];
  #state: ProcessState = 'running';
  #exit: ExitInfo | undefined;
  /** Grace deadline of the stop in progress (`performance.now()`); moved to 0 by `kill()`. */
  #deadline = Infinity;
  #stopping: Promise<ExitInfo> | undefined;
  #resolveGone!: (info: ExitInfo) => void;
  #outputOpen = 0;
  #outputDone: () => void = () => undefined;

  constructor(child: ChildProcess, init: HandleInit) {
    this.#child = child;
    this.#init = init;
    this.pid = init.pid;
    this.pgid = init.pid;
    this.startTime = init.startTime;
    this.label = init.label;
    this.gone = new Promise((resolve) => (this.#resolveGone = resolve));
    this.#readOutput('stdout', child.stdout);
    this.#readOutput('stderr', child.stderr);
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        this.#exit = { code, signal, at: Date.now() };
        resolve(this.#exit);
        this.#afterExit();
      });
    });
    child.on('error', () => undefined); // reported through exit; a failed kill() is not an event we need
    if (init.options.onMessage !== undefined) {
      const onMessage = init.options.onMessage;
      child.on('message', (m) => onMessage(m));
    }
    this.ready = init.options.readyFd === true ? this.#watchReady(child.stdio[3] as Readable) : undefined;
  }

  get state(): ProcessState {
    return this.#state;
  }

  get exit(): ExitInfo | undefined {
    return this.#exit;
  }

  tail(): readonly string[] {
    return [...this.#tail];
  }

  signal(signal: NodeJS.Signals): boolean {
    if (this.#state === 'gone') return false;
    const sent = signalGroup(this.pgid, signal);
    if (this.#exit === undefined) this.#child.kill(signal); // in case the leader left its group
    return sent;
  }

  send(message: unknown): Promise<void> {
    return new Promise((resolve, reject) => {
      if (this.#child.send === undefined || !this.#child.connected) {
        reject(new MusterError('MUSTER_CLOSED', `${this.label}: no open IPC channel to the child`));
        return;
      }
      this.#child.send(message as never, (err: Error | null) =>
        err === null
          ? resolve()
          : reject(new MusterError('MUSTER_CLOSED', `${this.label}: ${err.message}`, { cause: err })),
      );
    });
  }

  stop(options: { signal?: NodeJS.Signals; grace?: Duration } = {}): Promise<ExitInfo> {
    const graceMs = toMillis(options.grace ?? this.#init.graceMs, 'grace');
    const signal = options.signal ?? this.#init.stopSignal;
    if (signal === 'SIGKILL') return this.kill();
    if (this.#stopping !== undefined) {
      // Join the stop in progress; a shorter grace moves its deadline closer.
      this.#deadline = Math.min(this.#deadline, performance.now() + graceMs);
      return this.#stopping;
    }
    this.#stopping = this.#runStop(signal, graceMs);
    return this.#stopping;
  }

  kill(): Promise<ExitInfo> {
    this.#deadline = 0;
    if (this.#state !== 'gone') this.#sigkill();
    this.#stopping ??= this.#runStop('SIGKILL', 0);
    return this.#stopping;
  }

  async #runStop(signal: NodeJS.Signals, graceMs: number): Promise<ExitInfo> {
    if (this.#state === 'gone') return this.gone;
    if (signal === 'SIGKILL') {
      this.#sigkill();
    } else {
      this.#state = 'stopping';
      this.#deadline = Math.min(this.#deadline, performance.now() + graceMs);
      this.signal(signal);
      if (signal !== 'SIGCONT') this.signal('SIGCONT');
    }
    const done = await waitGroupGone(
      this.pgid,
      () => this.#deadline,
      () => this.#exit !== undefined,
    );
    if (!done) {
      this.#sigkill();
      await waitGroupGone(
        this.pgid,
        () => Infinity,
        () => this.#exit !== undefined,
      );
    }
    await this.#finish();
    return this.gone;
  }

  #sigkill(): void {
    if (this.#state !== 'gone') this.#state = 'killing';
    this.signal('SIGKILL');
  }

  /** The leader exited: if members are left, they get the stop sequence (nobody else would). */
  #afterExit(): void {
    if (this.#stopping !== undefined) return;
    if (!signalGroup(this.pgid, 0)) {
      this.#stopping = this.#finish().then(() => this.gone);
    } else {
      this.#stopping = this.#runStop(this.#init.stopSignal, this.#init.graceMs);
    }
  }

  async #finish(): Promise<void> {
    if (this.#state === 'gone') return;
    this.#state = 'gone';
    guard.remove(this.pgid);
    try {
      this.#init.options.registry?.remove(this.pid);
    } catch {
      // a record we could not remove is stale: the next sweep removes it without killing
    }
    await this.#outputClosed();
    const exit = this.#exit ?? { code: null, signal: 'SIGKILL', at: Date.now() };
    this.#resolveGone(exit);
  }

  #readOutput(stream: 'stdout' | 'stderr', readable: Readable | null): void {
    if (readable === null) return;
    const onLine = this.#init.options.onLine;
    this.#outputOpen++;
    readable.once('close', () => {
      if (--this.#outputOpen === 0) this.#outputDone();
    });
    readLines(
      readable,
      (line) => {
        this.#tail.push(line);
        if (this.#tail.length > TAIL_LINES) this.#tail.shift();
        onLine?.(stream, line);
      },
      (err) => process.emitWarning(`onLine of ${this.label} threw: ${String(err)}`, 'MusterWarning'),
    );
  }

  /** Waits for stdout/stderr to reach EOF, at most {@link OUTPUT_DRAIN_MS}; then stops reading. */
  async #outputClosed(): Promise<void> {
    if (this.#outputOpen === 0) return;
    let timer: NodeJS.Timeout | undefined;
    await new Promise<void>((resolve) => {
      this.#outputDone = resolve;
      timer = setTimeout(resolve, OUTPUT_DRAIN_MS);
    });
    clearTimeout(timer);
    this.#child.stdout?.destroy();
    this.#child.stderr?.destroy();
  }

  #watchReady(fd3: Readable): Promise<void> {
    const ready = new Promise<void>((resolve, reject) => {
      let seen = false;
      fd3.on('data', (chunk: Buffer) => {
        if (!seen && chunk.includes(0x0a)) {
          seen = true;
          resolve();
        }
        // keep reading (and dropping): closing our end would give the child EPIPE
      });
      fd3.on('error', () => undefined);
      void this.exited.then((exit) => {
        if (seen) return;
        const how = exit.signal === null ? `exit status ${exit.code}` : `signal ${exit.signal}`;
        reject(
          spawnFailed(
            this.#init.command,
            `it exited (${how}) before it wrote its readiness line on fd 3`,
            undefined,
            undefined,
            {
              exit,
              tail: this.tail(),
            },
          ),
        );
      });
    });
    ready.catch(() => undefined); // unobserved readiness is not an unhandled rejection
    return ready;
  }
}
