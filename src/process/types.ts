/** The process kernel's public types (Contract A). */
import type { Duration } from '../util/duration.js';
import type { ProcessRegistry } from './registry.js';

/**
 * Where a child's stdout or stderr goes: `'lines'` (default) captures it line by line (to `onLine`,
 * and the last lines to {@link ProcessHandle.tail}); `'inherit'` shares this process's; `'ignore'`
 * is /dev/null; a number is an open file descriptor (e.g. a log file), written by the child directly.
 */
export type OutputTarget = 'lines' | 'inherit' | 'ignore' | number;

/**
 * What can travel with an IPC message: a `net.Server`, a `net.Socket`, or a raw handle such as the
 * bound-but-not-accepting socket a server creates (Node's `send(message, sendHandle)`).
 */
export type IpcHandle = object;

export interface SpawnOptions {
  /** argv; no shell. `command[0]` is looked up on the child's `PATH` unless it holds a `/`. */
  readonly command: readonly string[];
  /** Merged over `process.env` (unless `envReplace`). */
  readonly env?: Readonly<Record<string, string>>;
  /** Use `env` alone as the child's environment. Default false. */
  readonly envReplace?: boolean;
  /** Working directory. Default: this process's. */
  readonly cwd?: string;
  /** For logs, errors and the registry, e.g. `'svc/p3'`. Default: the program's name. */
  readonly label?: string;
  /**
   * Called for each line of output (without the newline; a line is cut at 64 KiB). Synchronous; a
   * throwing listener is reported once as a process warning and never stops the draining.
   */
  readonly onLine?: (stream: 'stdout' | 'stderr', line: string) => void;
  /** Open fd 3 as a pipe; `ready` resolves on the first `'\n'` the child writes to it (s6's model). */
  readonly readyFd?: boolean;
  /** The first signal of {@link ProcessHandle.stop}. Default `SIGTERM`. */
  readonly stopSignal?: NodeJS.Signals;
  /** Time between the stop signal and SIGKILL. Default {@link DEFAULT_GRACE_MS}. */
  readonly grace?: Duration;
  /** Record pid/pgid/start time there while the group lives. */
  readonly registry?: ProcessRegistry;
  /** Default `'lines'`. */
  readonly stdout?: OutputTarget;
  /** Default `'lines'`. */
  readonly stderr?: OutputTarget;
  /** Open a Node IPC channel (the child must be Node): `send()` and `onMessage`. Default: none. */
  readonly ipc?: 'json' | 'advanced';
  /**
   * Messages from the child over the IPC channel; `handle` is the socket or server the child passed
   * with it (`process.send(message, handle)`), if any.
   */
  readonly onMessage?: (message: unknown, handle: IpcHandle | undefined) => void;
  /**
   * Keep a child forked ahead for the next spawn of this shape (`readyFd` or not), held at the gate
   * until that spawn writes its command (`spare.ts`): that spawn then does not wait for a fork and
   * an exec, which on a loaded host wait for a CPU. Applies to children whose stdout and stderr are
   * `'lines'` and that have no IPC channel; others, and a child whose environment the spare cannot
   * take (a variable to remove, a newline in a value or an argument), are forked as usual.
   * {@link discardSpare} ends the spare. Default false.
   */
  readonly prewarm?: boolean;
}

export interface ExitInfo {
  /** The leader's exit status, or null when a signal ended it. */
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  /** Wall-clock time (ms since the epoch) the leader's exit was seen. */
  readonly at: number;
}

/**
 * A child's life:
 * `running` → (`stop()`, or the leader exited with group members left) `stopping` → (grace passed,
 * or `kill()`) `killing` → `gone`; a leader that exits alone goes straight to `gone`.
 */
export type ProcessState = 'running' | 'stopping' | 'killing' | 'gone';

export interface ProcessHandle {
  readonly pid: number;
  /** Equal to `pid`: the child leads its own group (and session). */
  readonly pgid: number;
  /** Field 22 of `/proc/<pid>/stat` ('' where there is no /proc): with the pid, names it for ever. */
  readonly startTime: string;
  readonly label: string;
  /** The leader exited (its group may still be draining: see {@link gone}). Never rejects. */
  readonly exited: Promise<ExitInfo>;
  /** Every process of the group is gone (and output is read to its end). Never rejects. */
  readonly gone: Promise<ExitInfo>;
  /** With `readyFd`: resolves on the first line on fd 3; rejects `MUSTER_SPAWN_FAILED` if it exits first. */
  readonly ready: Promise<void> | undefined;
  readonly state: ProcessState;
  /** The leader's exit, once seen. */
  readonly exit: ExitInfo | undefined;
  /**
   * Signal (default: `stopSignal`, then SIGCONT so a stopped group can act on it) → wait up to the
   * grace for the whole group → SIGKILL the group. Resolves when the WHOLE GROUP is gone. Idempotent:
   * a second call joins the first (a shorter grace or SIGKILL escalates it). Rejects only
   * `MUSTER_INVALID_ARGUMENT` for a bad signal name or grace, with nothing sent.
   */
  stop(options?: { signal?: NodeJS.Signals; grace?: Duration }): Promise<ExitInfo>;
  /** SIGKILL the group now; resolves when it is gone. */
  kill(): Promise<ExitInfo>;
  /** Sends `signal` to the whole group (e.g. SIGSTOP/SIGCONT, SIGHUP). False when it is gone. */
  signal(signal: NodeJS.Signals): boolean;
  /**
   * Sends a message over the IPC channel (`ipc` option); rejects `MUSTER_CLOSED` when the channel is
   * closed. With `handle` (a listening `net.Server`, a `net.Socket`, or a raw TCP/pipe handle), the
   * descriptor goes along (SCM_RIGHTS), as `child_process`' `send(message, handle)` does: the child
   * receives it as the second argument of its `'message'` listener. `options.keepOpen` keeps a passed
   * socket open here (default: Node closes it once sent).
   */
  send(message: unknown, handle?: IpcHandle, options?: { readonly keepOpen?: boolean }): Promise<void>;
  /**
   * Processes that had left the group (setsid) but kept the `MUSTER_PROCESS` marker in their
   * environment, found and SIGKILLed once the group was gone. Normally 0.
   */
  readonly escaped: number;
  /** The last captured lines (stdout and stderr interleaved, newest last). */
  tail(): readonly string[];
  /** `stop()`, for `await using child = await spawnProcess(…)`. */
  [Symbol.asyncDispose](): Promise<void>;
}
