/**
 * Death of the parent, without native add-ons. Two mechanisms, both armed for every child:
 *
 * 1. `setpriv --pdeathsig KILL` (util-linux) wraps the command: the kernel SIGKILLs the direct child
 *    when the thread that spawned it (Node's main thread) dies. Probed once per process.
 * 2. The guard: one small `sh` per parent process, reading lines on its stdin (a pipe whose only
 *    writer is this process). The parent writes `+<pgid>` after each spawn and `-<pgid>` once the
 *    group is gone. On EOF — the parent exited or was SIGKILLed, the kernel closed the pipe — the
 *    guard SIGKILLs every group still recorded, then every process whose environment carries this
 *    parent's `MUSTER_PROCESS` marker (descendants that left their group with setsid), then the groups
 *    again (a fork that raced the first pass), and exits. It covers grandchildren, which the death
 *    signal does not reach.
 *
 * See docs/process.md for the races and caveats.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { delimiter, isAbsolute, join } from 'node:path';
import type { Writable } from 'node:stream';
import { MARKER_VARIABLE, selfIdentity } from './group.js';

/**
 * `<pid>.<start time>` of this process: the prefix of the `MUSTER_PROCESS` marker of every child it
 * starts (`<token>/<serial>`), unique on the host for ever.
 */
export function parentToken(): string {
  const { pid, startTime } = selfIdentity();
  return `${pid}.${startTime}`;
}

/** The guard's program (dash/POSIX sh; builtins only, so a group kill costs no fork). */
export const GUARD_SCRIPT = `trap '' HUP INT TERM PIPE
g=' '
while read -r op id; do
  case $op in
    +) case $g in *" $id "*) ;; *) g="$g$id " ;; esac ;;
    -) case $g in *" $id "*) g="\${g%% $id *} \${g#* $id }" ;; esac ;;
  esac
done
for id in $g; do kill -9 -$id 2>/dev/null; done
for f in $(grep -lzs "$1" /proc/[0-9]*/environ); do
  p=\${f#/proc/}; kill -9 \${p%/environ} 2>/dev/null
done
for id in $g; do kill -9 -$id 2>/dev/null; done
exit 0`;

let setprivPath: string | null | undefined;

/** `setpriv` when it exists and accepts `--pdeathsig KILL` (probed once, ~5 ms); else `null`. */
export function setprivCommand(): string | null {
  if (setprivPath === undefined) {
    setprivPath = null;
    if (process.platform === 'linux' && process.env.MUSTER_NO_SETPRIV !== '1') {
      // The absolute path: spawning a bare name makes every child try each PATH entry with a
      // failed execve before it finds the program (8 on a typical PATH), while this process waits.
      const onPath = (process.env.PATH ?? '')
        .split(delimiter)
        .filter((dir) => isAbsolute(dir))
        .map((dir) => join(dir, 'setpriv'))
        .find((file) => {
          try {
            accessSync(file, constants.X_OK);
            return true;
          } catch {
            return false;
          }
        });
      for (const candidate of [onPath ?? 'setpriv', '/usr/bin/setpriv', '/bin/setpriv']) {
        const r = spawnSync(candidate, ['--pdeathsig', 'KILL', '--', 'true'], { stdio: 'ignore' });
        if (r.status === 0) {
          setprivPath = candidate;
          break;
        }
      }
    }
  }
  return setprivPath;
}

/**
 * This process's environment without the `MUSTER_PROCESS` marker: when this process was itself started
 * by a kernel, that kernel must not take the guard (a process outside our group carrying our marker)
 * for an escaped descendant and kill it before it has done its work.
 */
function guardEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  delete env[MARKER_VARIABLE];
  return env;
}

/**
 * The per-process guard. Started on first use; if it dies (someone killed it), the next operation
 * starts a new one and tells it every group still alive.
 */
class Guard {
  #child: ChildProcess | undefined;
  readonly #groups = new Set<number>();
  /** How many guards were started (1 unless one died); for tests and the docs' failure table. */
  starts = 0;

  get pid(): number | undefined {
    return this.#child?.pid;
  }

  /** Records a group; the guard will SIGKILL it if this process dies before {@link remove}. */
  add(pgid: number): void {
    this.#groups.add(pgid);
    this.#write(`+ ${pgid}\n`);
  }

  remove(pgid: number): void {
    if (this.#groups.delete(pgid)) this.#write(`- ${pgid}\n`);
  }

  get groups(): ReadonlySet<number> {
    return this.#groups;
  }

  #write(line: string): void {
    const stdin = this.#ensure();
    // A pipe write of a few bytes completes synchronously (libuv tries write(2) first), so once this
    // returns the line is in the kernel's pipe buffer: the guard reads it even if we die right now.
    stdin?.write(line);
  }

  #ensure(): Writable | undefined {
    if (this.#child !== undefined && this.#child.exitCode === null && this.#child.signalCode === null)
      return this.#child.stdin ?? undefined;
    // $1: a basic regular expression for "this parent's marker" at the start of an environ entry.
    const pattern = `^${MARKER_VARIABLE}=${parentToken().replace('.', '[.]')}/`;
    const child = spawn('/bin/sh', ['-c', GUARD_SCRIPT, 'muster-guard', pattern], {
      stdio: ['pipe', 'ignore', 'ignore'],
      detached: true, // its own session: a signal to our process group does not disarm it
      env: guardEnv(),
    });
    this.starts++;
    child.unref();
    const stdin = child.stdin;
    if (stdin === null) return undefined;
    // Neither the guard nor its pipe keeps this process alive.
    (stdin as unknown as { unref?: () => void }).unref?.();
    stdin.on('error', () => undefined); // EPIPE when the guard died; it is replaced on next use
    child.on('error', () => undefined);
    child.once('exit', () => {
      if (this.#child === child) this.#child = undefined;
      // Re-arm at once for the groups still alive.
      if (this.#groups.size > 0) this.#resend();
    });
    this.#child = child;
    if (this.#groups.size > 0) stdin.write([...this.#groups].map((g) => `+ ${g}\n`).join(''));
    return stdin;
  }

  #resend(): void {
    this.#ensure();
  }
}

/** The process's guard (one per process; children are only spawned from the main thread). */
export const guard = new Guard();
