/**
 * The process kernel: every child process muster starts goes through here.
 *
 * - {@link spawnProcess} starts a command (argv, no shell) from the main thread in its own process
 *   group, reads its output line by line without ever blocking it, and resolves a handle whose
 *   `stop()` is signal → grace → SIGKILL of the whole group and resolves only when the group is gone.
 * - No child or grandchild outlives this process, even on SIGKILL: `setpriv --pdeathsig KILL` plus a
 *   guard process that SIGKILLs every recorded group when its pipe from us reaches EOF.
 * - {@link ProcessRegistry} records what was started in a directory; `sweep()` at start kills what a
 *   dead predecessor left behind (pid-reuse safe through the start time).
 *
 * Guarantees, races and caveats: docs/process.md.
 */
export type {
  ExitInfo,
  IpcHandle,
  OutputTarget,
  ProcessHandle,
  ProcessState,
  SpawnOptions,
} from './types.js';
export { DEFAULT_GRACE_MS, DEFAULT_STOP_SIGNAL, spawnProcess } from './spawn.js';
export { TAIL_LINES } from './handle.js';
export { discardSpare, SPARE_DELAY_MS } from './spare.js';
export { ProcessRegistry, SWEEP_WAIT_MS, type ProcessRecord, type SweepReport } from './registry.js';
export { MAX_LINE_BYTES } from './lines.js';
export { isAlive, readStartTime } from './group.js';
