/**
 * The gate every child passes before its command runs, and the order of forks. Shared by
 * `spawnProcess` (spawn.ts) and the spares forked ahead of it (spare.ts).
 */
import { parentToken } from './guard.js';

/** Waits for one line on fd 4 (the go-ahead), closes it, becomes the command. */
export const WRAPPER = 'read -r _ <&4 || exit 125; exec 4<&-; exec "$@"';

/** The shell variable a spare reads its line into (the line unsets it first: see `claimSpare`). */
export const SPARE_LINE_VARIABLE = 'muster_go_line';

/**
 * A spare's gate: the go-ahead line is itself the command to run — `export`s and `exec PROGRAM
 * ARGS…`, shell-quoted on one line (see `claimSpare`) — which the shell evaluates. Nothing runs
 * before that line; EOF (this process died) exits 125 without running anything, as {@link WRAPPER}.
 */
export const SPARE_WRAPPER = `IFS= read -r ${SPARE_LINE_VARIABLE} <&4 || exit 125; exec 4<&-; eval "$${SPARE_LINE_VARIABLE}"`;

/** argv of a gated child: `[setpriv --pdeathsig KILL --] /bin/sh -c WRAPPER muster-spawn ARGS…`. */
export function gateArgv(setpriv: string | null, wrapper: string, args: readonly string[]): string[] {
  return [
    ...(setpriv === null ? [] : [setpriv, '--pdeathsig', 'KILL', '--']),
    ...['/bin/sh', '-c', wrapper, 'muster-spawn', ...args],
  ];
}

let serial = 0;

/** A new `MUSTER_PROCESS` value: this process's token and a serial, unique on the host for ever. */
export function nextMarker(): string {
  return `${parentToken()}/${++serial}`;
}

/**
 * One spawn per event-loop turn. `child_process.spawn` returns only once the child has `exec`d —
 * about 3 ms of this thread per child on this machine, more for a large parent — so an agent that
 * acquired 100 partitions at once and spawned in one turn held its event loop for 0.3–0.7 s, long
 * enough to delay its session's keep-alive. Each spawn waits for the previous one and one
 * `setImmediate`, so timers and I/O run between any two forks; the total time is unchanged.
 */
let spawnTurn: Promise<void> = Promise.resolve();
export function nextSpawnTurn(): Promise<void> {
  const turn = spawnTurn.then(() => new Promise<void>((resolve) => setImmediate(resolve)));
  spawnTurn = turn;
  return turn;
}
