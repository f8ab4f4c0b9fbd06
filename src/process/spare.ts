/**
 * Spares: a child forked ahead of time and held at the gate, so that the next `spawnProcess` with
 * `prewarm` writes its command to a process that already exists instead of forking one.
 *
 * `child_process.spawn` returns only once the new process has exec'd, and on a loaded host the new
 * task waits for a CPU before it can: 20–65 ms per child on the 2-core bench host, on the critical
 * path of a hand-off (the successor spawns after its owner key exists). A spare pays that wait
 * earlier, off the path. It is the chain every child runs — `setpriv --pdeathsig KILL` → `sh` waiting
 * on fd 4, recorded with the guard, its own `MUSTER_PROCESS` marker — except that its go-ahead line
 * carries the command: `export`s of what differs from the spare's environment and `exec PROGRAM
 * ARGS…`, shell-quoted on one line, which the waiting shell evaluates. Nothing runs before that
 * line; when this process dies first, fd 4 reads EOF and the spare exits 125 (and the death signal
 * and the guard kill it anyway). Spares are made {@link SPARE_DELAY_MS} after the last `prewarm`
 * spawn, so their forks are not part of the burst of starts that used the last ones.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import type { Readable, Writable } from 'node:stream';
import { isMainThread } from 'node:worker_threads';
import { MARKER_VARIABLE, readStartTime, signalGroup } from './group.js';
import { gateArgv, nextMarker, nextSpawnTurn, SPARE_LINE_VARIABLE, SPARE_WRAPPER } from './gate.js';
import { guard, setprivCommand } from './guard.js';

/**
 * 250 ms after the last `prewarm` spawn: after the burst of starts that used the last ones (a
 * successor's starts in one hand-off come within ~100 ms), and in place before the next hand-off of
 * a rolling restart, where agents leave one after another as soon as the fleet is balanced. With 1 s
 * the successors of one hand-off and the agent that had just joined met the next hand-off with none,
 * or forked them in it (the agent bench: hand-off p50 176–180 → 145–154 ms, p99 343–362 → 282–339).
 */
export const SPARE_DELAY_MS = 250;
/**
 * 2 spares: a successor often takes two partitions of a leaving instance at once (with one spare per
 * agent, 22 of 58 starts of a hand-off bench run — 6 agents, 36 partitions — found none waiting).
 */
export const SPARES = 2;

/** A child waiting at the gate for a command. */
export interface Spare {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly startTime: string;
  readonly marker: string;
  /** The environment it was forked with (its marker included). */
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly cwd: string;
  /** fd 3 is a pipe (a `readyFd` child's shape). */
  readonly readyFd: boolean;
  claimed: boolean;
}

/** Waiting spares, all of one shape (a spawn of another shape replaces them). */
let spares: Spare[] = [];
let timer: NodeJS.Timeout | undefined;
/** Bumped by {@link discardSpare}: a spare being prepared then is not made. */
let generation = 0;

/** Every spare waiting now (tests). */
export function waitingSpares(): readonly Spare[] {
  return spares;
}

function handles(child: ChildProcess): { ref(): void; unref(): void }[] {
  return [child, ...child.stdio.filter((s): s is Readable | Writable => s !== null)] as unknown as {
    ref(): void;
    unref(): void;
  }[];
}

/**
 * Forks one spare of this shape now (after the previous fork's turn) unless {@link SPARES} wait,
 * replacing those of another shape.
 */
export async function prepareSpare(readyFd: boolean): Promise<void> {
  if (!isMainThread) return; // the death signal follows the spawning thread (see spawnProcess)
  const asked = generation;
  await nextSpawnTurn();
  if (asked !== generation) return;
  if (spares.length > 0 && spares[0]?.readyFd !== readyFd) await discardSpare();
  if (spares.length >= SPARES) return;
  const marker = nextMarker();
  const env = { ...process.env, [MARKER_VARIABLE]: marker };
  const cwd = process.cwd();
  const argv = gateArgv(setprivCommand(), SPARE_WRAPPER, []);
  let child: ChildProcess;
  try {
    child = spawn(argv[0] as string, argv.slice(1), {
      cwd,
      env,
      stdio: ['ignore', 'pipe', 'pipe', readyFd ? 'pipe' : 'ignore', 'pipe'],
      detached: true,
    });
  } catch {
    return; // EAGAIN and the like: the next spawn forks as usual
  }
  child.on('error', () => undefined);
  const pid = child.pid;
  if (pid === undefined) return;
  guard.add(pid);
  (child.stdio[4] as Writable).on('error', () => undefined);
  // A waiting spare keeps nothing alive: this process may end while one waits (fd 4's EOF ends it).
  for (const h of handles(child)) h.unref();
  const s: Spare = {
    child,
    pid,
    startTime: readStartTime(pid) ?? '',
    marker,
    env,
    cwd,
    readyFd,
    claimed: false,
  };
  child.once('exit', () => {
    spares = spares.filter((x) => x !== s);
    if (!s.claimed) guard.remove(pid);
  });
  spares.push(s);
}

/**
 * Makes {@link SPARES} of this shape wait, {@link SPARE_DELAY_MS} after the last `prewarm` spawn (each
 * one moves the time on), so that a burst of starts — a hand-off, a start-up — does not pay for forks
 * of spares while it lasts.
 */
export function scheduleSpare(readyFd: boolean): void {
  if (timer !== undefined) clearTimeout(timer);
  timer = undefined;
  if (spares.length >= SPARES && spares[0]?.readyFd === readyFd) return;
  timer = setTimeout(() => {
    timer = undefined;
    void (async () => {
      for (let i = 0; i < SPARES; i++) await prepareSpare(readyFd);
    })();
  }, SPARE_DELAY_MS);
  timer.unref();
}

/** Kills the waiting spares and cancels the planned ones; resolves once they have exited. */
export async function discardSpare(): Promise<void> {
  generation++;
  if (timer !== undefined) clearTimeout(timer);
  timer = undefined;
  const waiting = spares;
  spares = [];
  await Promise.all(
    waiting.map(async (s) => {
      if (s.child.exitCode !== null || s.child.signalCode !== null) return;
      const exited = new Promise<void>((resolve) => s.child.once('exit', () => resolve()));
      s.child.ref();
      try {
        signalGroup(s.pid, 'SIGKILL');
      } catch {
        // gone meanwhile
      }
      await exited;
    }),
  );
}

const NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** `s` in single quotes for `sh` (a `'` becomes `'\''`). */
export function shellQuote(s: string): string {
  return `'${s.replaceAll("'", `'\\''`)}'`;
}

/**
 * Takes the waiting spare for a child of this shape: the go-ahead line that makes it run `argv`
 * with `env` (whose marker must be the spare's: see {@link Spare.marker}), or `undefined` — the
 * spare stays — when none fits or the line cannot say it: a variable to remove, a name the shell
 * cannot export, a newline in a value or an argument (the line is read with `read`), another cwd.
 */
export function claimSpare(
  readyFd: boolean,
  cwd: string,
  env: (marker: string) => Readonly<Record<string, string | undefined>>,
  argv: readonly string[],
): { spare: Spare; line: string } | undefined {
  const s = spares.find((x) => x.child.exitCode === null && x.child.signalCode === null);
  if (s === undefined || s.readyFd !== readyFd || s.cwd !== cwd) return undefined;
  const want = env(s.marker);
  for (const k of Object.keys(s.env)) if (want[k] === undefined && s.env[k] !== undefined) return undefined;
  const exports: string[] = [];
  for (const [k, v] of Object.entries(want)) {
    // The line's own variable is unset first (it holds the line), so it is exported again if wanted.
    if (v === undefined || (s.env[k] === v && k !== SPARE_LINE_VARIABLE)) continue;
    if (!NAME.test(k) || v.includes('\n')) return undefined;
    exports.push(shellQuote(`${k}=${v}`));
  }
  if (argv.some((a) => a.includes('\n'))) return undefined;
  const line = `unset ${SPARE_LINE_VARIABLE}; ${exports.length > 0 ? `export ${exports.join(' ')}; ` : ''}exec ${argv.map(shellQuote).join(' ')}\n`;
  spares = spares.filter((x) => x !== s);
  s.claimed = true;
  for (const h of handles(s.child)) h.ref();
  return { spare: s, line };
}
