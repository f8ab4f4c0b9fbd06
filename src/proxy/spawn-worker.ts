/**
 * TEMPORARY: the one place the proxy starts child processes, until the process kernel
 * (`src/process/`, Contract A) can start a Node child with an IPC channel (handle passing needs one).
 * Workers are forked with `child_process.fork`; the master kills them when it exits (they also exit
 * on their own when the IPC channel closes, see worker-main.ts).
 */
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/** The compiled worker entry next to this module. */
const WORKER_MAIN = fileURLToPath(new URL('./worker-main.js', import.meta.url));

export interface WorkerProcess {
  readonly child: ChildProcess;
  readonly pid: number;
}

/** Forks one worker with an IPC channel; its stdout/stderr go to ours. */
export function spawnWorker(env: Readonly<Record<string, string>> = {}): WorkerProcess {
  const child = fork(WORKER_MAIN, [], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    serialization: 'advanced',
  });
  return { child, pid: child.pid ?? -1 };
}
