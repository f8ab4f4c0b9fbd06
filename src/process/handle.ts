/**
 * The handle of one spawned child: its output, readiness, exit, and the stop sequence of its group
 * (signal → grace → SIGKILL, then the escapees found by their marker). See docs/process.md, "States".
 */
import type { ChildProcess } from 'node:child_process';
import type { Readable } from 'node:stream';
import { MusterError } from '../errors.js';
import { type Duration, toMillis } from '../util/duration.js';
import { checkSignal, spawnFailed } from './command.js';
import { findMarkersShared, isAlive, readStat, signalGroup, waitGroupGone } from './group.js';
import { guard } from './guard.js';
import { readLines } from './lines.js';
import type { ExitInfo, IpcHandle, ProcessHandle, ProcessState, SpawnOptions } from './types.js';

/** 20 lines: enough to say why a child died in an error message or a log line. */
export const TAIL_LINES = 20;
/**
 * 1 s: after the group is gone its output pipes reach EOF at once, unless a process that left the
 * group (setsid) still holds them; that one is not waited for.
 */
export const OUTPUT_DRAIN_MS = 1000;
/** 1 s: a SIGKILLed process is dead within milliseconds; one that is not (D state, NFS) is left. */
export const ESCAPEE_WAIT_MS = 1000;

function signalPid(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // gone meanwhile, or not ours to signal (EPERM)
  }
}

export interface HandleInit {
  readonly pid: number;
  readonly startTime: string;
  readonly label: string;
  readonly command: readonly string[];
  readonly graceMs: number;
  readonly stopSignal: NodeJS.Signals;
  readonly options: SpawnOptions;
  /** The value of `MUSTER_PROCESS` in the child's environment. */
  readonly marker: string;
}

export class ChildHandle implements ProcessHandle {
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
  readonly #escaped = new Set<number>();
  /** The escapee scan started right after the group's SIGKILL (see {@link #sigkill}). */
  #killScan: Promise<number[]> | undefined;
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
      child.on('message', (m, handle) => onMessage(m, handle ?? undefined));
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
    let sent: boolean;
    try {
      sent = signalGroup(this.pgid, signal);
    } catch {
      sent = false; // EPERM: every member left changed its user; nothing we may signal
    }
    if (this.#exit === undefined) this.#child.kill(signal); // in case the leader left its group
    return sent;
  }

  send(message: unknown, handle?: IpcHandle, options?: { readonly keepOpen?: boolean }): Promise<void> {
    return new Promise((resolve, reject) => {
      if (this.#child.send === undefined || !this.#child.connected) {
        reject(new MusterError('MUSTER_CLOSED', `${this.label}: no open IPC channel to the child`));
        return;
      }
      const done = (err: Error | null): void =>
        err === null
          ? resolve()
          : reject(new MusterError('MUSTER_CLOSED', `${this.label}: ${err.message}`, { cause: err }));
      if (handle === undefined) this.#child.send(message as never, done);
      else
        this.#child.send(message as never, handle as never, { keepOpen: options?.keepOpen === true }, done);
    });
  }

  stop(options: { signal?: NodeJS.Signals; grace?: Duration } = {}): Promise<ExitInfo> {
    let graceMs: number;
    let signal: NodeJS.Signals;
    try {
      graceMs = toMillis(options.grace ?? this.#init.graceMs, 'grace');
      signal = checkSignal(options.signal ?? this.#init.stopSignal);
    } catch (err) {
      return Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
    if (signal === 'SIGKILL') return this.kill();
    if (this.#stopping !== undefined) {
      // Join the stop in progress; a shorter grace moves its deadline closer.
      this.#deadline = Math.min(this.#deadline, performance.now() + graceMs);
      return this.#stopping;
    }
    this.#stopping = this.#runStop(signal, graceMs);
    return this.#stopping;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
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
    // The escapees get the stop signal too; their scan of /proc runs while the group dies, not
    // before the wait starts (it used to delay seeing the group gone by a whole scan), and the
    // SIGKILL at the end of the grace does not wait for it. With no grace the stop is a SIGKILL in
    // all but name: the escapees get theirs from the scan once the group is gone (#finish), and
    // this first scan is skipped.
    const escapees =
      signal === 'SIGKILL' || graceMs === 0
        ? Promise.resolve()
        : this.#escapees().then((pids) => {
            for (const pid of pids) {
              this.#escaped.add(pid);
              signalPid(pid, signal);
            }
          });
    const done = await waitGroupGone(
      this.pgid,
      () => this.#deadline,
      () => this.#exit !== undefined,
      this.exited,
    );
    if (!done) {
      this.#sigkill();
      await waitGroupGone(
        this.pgid,
        () => Infinity,
        () => this.#exit !== undefined,
        this.exited,
      );
    }
    await escapees;
    await this.#finish();
    return this.gone;
  }

  #sigkill(): void {
    if (this.#state !== 'gone') this.#state = 'killing';
    this.signal('SIGKILL');
    // Once the group is SIGKILLed its members create no process any more (a fork racing the kill
    // is abandoned), so a scan that starts now sees every escapee there will be — as the scan
    // after the group is gone did, but it runs while the group dies, not after (docs/process.md,
    // "States"). One scan serves every child SIGKILLed in the same turn.
    this.#killScan ??= this.#escapees().catch(() => []);
  }

  /** The leader exited: if members are left, they get the stop sequence (nobody else would). */
  #afterExit(): void {
    if (this.#stopping !== undefined) return;
    let alone: boolean;
    try {
      alone = !signalGroup(this.pgid, 0);
    } catch {
      alone = false; // EPERM: members left, of another user
    }
    if (alone) {
      this.#stopping = this.#finish().then(() => this.gone);
    } else {
      this.#stopping = this.#runStop(this.#init.stopSignal, this.#init.graceMs);
    }
  }

  /** Marked processes outside the group: descendants that left it (setsid). */
  async #escapees(): Promise<number[]> {
    // One scan of /proc for every child of this process stopping now (their markers share a prefix).
    const marker = this.#init.marker;
    const all = await findMarkersShared(marker.slice(0, marker.lastIndexOf('/') + 1));
    // Alive and outside the group: a member seen by a scan that ran while the group died is gone
    // (or a zombie) by now, and was never an escapee.
    return (all.get(marker) ?? []).filter((pid) => {
      const stat = readStat(pid);
      return stat !== undefined && stat.state !== 'Z' && stat.pgid !== this.pgid;
    });
  }

  /** SIGKILLs the escapees and waits (at most {@link ESCAPEE_WAIT_MS}) until they are dead. */
  async #killEscapees(): Promise<void> {
    let left = await (this.#killScan ?? this.#escapees());
    if (left.length === 0) return;
    for (const pid of left) this.#escaped.add(pid);
    for (const pid of left) signalPid(pid, 'SIGKILL');
    const until = performance.now() + ESCAPEE_WAIT_MS;
    while (left.length > 0 && performance.now() < until) {
      await new Promise((resolve) => setTimeout(resolve, 2));
      left = left.filter((pid) => isAlive(pid));
    }
  }

  /** How many processes that left the group (setsid) were found by their marker and killed. */
  get escaped(): number {
    return this.#escaped.size;
  }

  async #finish(): Promise<void> {
    if (this.#state === 'gone') return;
    await this.#killEscapees();
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
