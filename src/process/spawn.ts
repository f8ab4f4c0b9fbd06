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
import { basename, resolve } from 'node:path';
import type { Writable } from 'node:stream';
import { isMainThread } from 'node:worker_threads';
import { invalidArgument, MusterError } from '../errors.js';
import { toMillis } from '../util/duration.js';
import { checkCwd, checkSignal, resolveProgram, show, spawnFailed } from './command.js';
import { gateArgv, nextMarker, nextSpawnTurn, WRAPPER } from './gate.js';
import { MARKER_VARIABLE, readStartTime, signalGroup, waitGroupGone } from './group.js';
import { guard, setprivCommand } from './guard.js';
import { ChildHandle } from './handle.js';
import { claimSpare, type Spare, scheduleSpare } from './spare.js';
import type { OutputTarget, ProcessHandle, SpawnOptions } from './types.js';

/** 10 s: systemd's TimeoutStopSec is 90 s, Kubernetes' grace 30 s; a supervisor wants it sooner. */
export const DEFAULT_GRACE_MS = 10_000;
/** SIGTERM, as systemd, Kubernetes and Docker send first. */
export const DEFAULT_STOP_SIGNAL: NodeJS.Signals = 'SIGTERM';

export { WRAPPER } from './gate.js';

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
  const stopSignal = checkSignal(options.stopSignal ?? DEFAULT_STOP_SIGNAL);
  const base: Record<string, string | undefined> =
    options.envReplace === true ? { ...options.env } : { ...process.env, ...options.env };
  const cwd = options.cwd ?? process.cwd();
  checkCwd(command, cwd);
  const program = resolveProgram(command, cwd, base.PATH);
  const readyFd = options.readyFd === true;
  // A spare fits a child whose output is read in lines and that has no IPC channel (see spare.ts).
  const prewarm =
    options.prewarm === true &&
    (options.stdout ?? 'lines') === 'lines' &&
    (options.stderr ?? 'lines') === 'lines' &&
    options.ipc === undefined;
  const argv = [program, ...command.slice(1)];
  const claimed = prewarm
    ? claimSpare(readyFd, resolve(cwd), (m) => ({ ...base, [MARKER_VARIABLE]: m }), argv)
    : undefined;
  if (prewarm) scheduleSpare(readyFd);
  const started = claimed?.spare ?? (await forkGated(command, argv, base, cwd, options));
  const { child, pid, startTime, marker } = started;
  // The wrapper waits on fd 4: tell the registry (the guard knows the group already), then let it run.
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
  go.end(claimed?.line ?? '\n');
  return new ChildHandle(child, { pid, startTime, label, command, graceMs, stopSignal, options, marker });
}

/** Forks `[setpriv …] sh -c WRAPPER muster-spawn ARGV…` in its own group, held at the gate; tells the guard. */
async function forkGated(
  command: readonly string[],
  argv: readonly string[],
  base: Record<string, string | undefined>,
  cwd: string,
  options: SpawnOptions,
): Promise<Pick<Spare, 'child' | 'pid' | 'startTime' | 'marker'>> {
  const marker = nextMarker();
  const env = { ...base, [MARKER_VARIABLE]: marker };
  const full = gateArgv(setprivCommand(), WRAPPER, argv);
  const stdio: StdioOptions = [
    'ignore',
    stdioOf(options.stdout ?? 'lines'),
    stdioOf(options.stderr ?? 'lines'),
    options.readyFd === true ? 'pipe' : 'ignore',
    'pipe',
    ...(options.ipc === undefined ? [] : ['ipc' as const]),
  ];
  await nextSpawnTurn();
  let child: ChildProcess;
  try {
    child = spawn(full[0] as string, full.slice(1), {
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
    const err = await new Promise<Error>((settle) => child.once('error', settle));
    throw spawnFailed(command, err.message, (err as NodeJS.ErrnoException).code, err);
  }
  guard.add(pid);
  return { child, pid, startTime: readStartTime(pid) ?? '', marker };
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
