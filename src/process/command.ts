/**
 * Checking a spawn's input and finding the program before spawning it. The child runs through a small wrapper (see spawn.ts), so
 * an `exec` failure would show up as an exit status, not a spawn error; resolving the program here
 * first turns a missing or non-executable command into `MUSTER_SPAWN_FAILED` with its reason.
 */
import { accessSync, constants, statSync } from 'node:fs';
import { delimiter, resolve } from 'node:path';
import { constants as os } from 'node:os';
import { invalidArgument, MusterError } from '../errors.js';

/** `MUSTER_SPAWN_FAILED` naming the command and the reason. */
export function spawnFailed(
  command: readonly string[],
  reason: string,
  errno?: string,
  cause?: unknown,
  extra: Record<string, unknown> = {},
): MusterError {
  return new MusterError('MUSTER_SPAWN_FAILED', `could not start ${show(command)}: ${reason}`, {
    cause,
    details: { command: [...command], ...(errno === undefined ? {} : { errno }), ...extra },
  });
}

/** The command as a person would type it, shortened. */
export function show(command: readonly string[]): string {
  const text = command.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : JSON.stringify(a))).join(' ');
  return `'${text.length > 120 ? `${text.slice(0, 117)}...` : text}'`;
}

/**
 * The absolute path of `program`: as given when it holds a `/` (relative to `cwd`), else the first
 * executable file of that name on `path`. Throws `MUSTER_SPAWN_FAILED` (ENOENT, EACCES) otherwise.
 */
export function resolveProgram(command: readonly string[], cwd: string, path: string | undefined): string {
  const program = command[0] as string;
  if (program.includes('/')) {
    const file = resolve(cwd, program);
    const problem = checkExecutable(file);
    if (problem !== undefined) throw spawnFailed(command, `${file}: ${problem.text}`, problem.errno);
    return file;
  }
  let sawNoExec: string | undefined;
  for (const dir of (path ?? '').split(delimiter)) {
    const file = resolve(cwd, dir === '' ? '.' : dir, program);
    const problem = checkExecutable(file);
    if (problem === undefined) return file;
    if (problem.errno === 'EACCES') sawNoExec ??= file;
  }
  if (sawNoExec !== undefined)
    throw spawnFailed(command, `${sawNoExec} is not executable (chmod +x it?)`, 'EACCES');
  throw spawnFailed(command, `'${program}' was not found on PATH (${path ?? 'unset'})`, 'ENOENT');
}

function checkExecutable(file: string): { errno: string; text: string } | undefined {
  try {
    if (!statSync(file).isFile()) return { errno: 'EACCES', text: 'is not a regular file' };
    accessSync(file, constants.X_OK);
    return undefined;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'ENOENT';
    return { errno: code, text: code === 'EACCES' ? 'is not executable' : 'no such file' };
  }
}

/** Throws `MUSTER_SPAWN_FAILED` (ENOENT/ENOTDIR) when `cwd` is not a directory. */
export function checkCwd(command: readonly string[], cwd: string): void {
  let ok = false;
  try {
    ok = statSync(cwd).isDirectory();
  } catch {
    ok = false;
  }
  if (!ok) throw spawnFailed(command, `the working directory ${cwd} does not exist`, 'ENOENT');
}

/** The signal name, or `MUSTER_INVALID_ARGUMENT`. */
export function checkSignal(signal: NodeJS.Signals): NodeJS.Signals {
  if (typeof signal !== 'string' || !(signal in os.signals))
    throw invalidArgument(`stopSignal must be a signal name such as 'SIGTERM', got ${String(signal)}`);
  return signal;
}
