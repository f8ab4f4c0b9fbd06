/**
 * The one place in muster that listens to process signals. A daemon's runtime installs these
 * listeners for its life and removes them when it is done, so that Node's defaults come back.
 */
import { constants } from 'node:os';

/** The signals that stop a daemon; SIGHUP stops it too when the body cannot reload. */
export const STOP_SIGNALS = ['SIGTERM', 'SIGINT'] as const;
export type StopSignal = (typeof STOP_SIGNALS)[number] | 'SIGHUP';

export interface ProcessEventHandlers {
  /** SIGTERM or SIGINT (or SIGHUP, see {@link ProcessEventHandlers.hangup}). */
  stop(signal: StopSignal): void;
  /** SIGHUP. */
  hangup(): void;
  /** The parent's IPC channel closed (only when asked for). */
  disconnect?(): void;
}

/** Daemons whose listeners are installed now. */
let daemonsListening = 0;

/** Installs the listeners; returns the function that removes them (idempotent). */
export function listenToProcess(handlers: ProcessEventHandlers): () => void {
  daemonsListening++;
  const onTerm = (): void => handlers.stop('SIGTERM');
  const onInt = (): void => handlers.stop('SIGINT');
  const onHup = (): void => handlers.hangup();
  const onDisconnect = (): void => handlers.disconnect?.();
  process.on('SIGTERM', onTerm);
  process.on('SIGINT', onInt);
  process.on('SIGHUP', onHup);
  const ipc = handlers.disconnect !== undefined && typeof process.send === 'function';
  if (ipc) process.on('disconnect', onDisconnect);
  let removed = false;
  return () => {
    if (removed) return;
    removed = true;
    daemonsListening--;
    process.off('SIGTERM', onTerm);
    process.off('SIGINT', onInt);
    process.off('SIGHUP', onHup);
    if (ipc) process.off('disconnect', onDisconnect);
  };
}

/** Only `disconnect` (no signals): for daemons run with `handleSignals: false` inside a forked child. */
export function listenToDisconnect(onDisconnect: () => void): () => void {
  if (typeof process.send !== 'function') return () => undefined;
  process.on('disconnect', onDisconnect);
  return () => process.off('disconnect', onDisconnect);
}

/** The shell's status for a process ended by `signal`: 128 + its number (SIGINT 130, SIGTERM 143). */
export function signalExitCode(signal: NodeJS.Signals): number {
  return 128 + (constants.signals[signal] ?? constants.signals.SIGTERM);
}

const interruptHooks = new Set<() => void>();
const INTERRUPT_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

/**
 * Synchronous clean-up when the process is interrupted outside a daemon (a test process, a
 * script): on SIGINT, SIGTERM or SIGHUP with no daemon handling signals, runs every hook, then
 * re-raises the signal with Node's default action (the process ends as if it had no handler).
 * While a daemon handles signals it does nothing: the daemon stops and the process exits, so pair a
 * hook with `process.on('exit', …)`. Used by the etcd test harness to kill its servers. Returns the
 * function that removes the hook.
 */
export function cleanUpOnInterrupt(hook: () => void): () => void {
  if (interruptHooks.size === 0) {
    for (const signal of INTERRUPT_SIGNALS) process.on(signal, onInterrupt);
  }
  interruptHooks.add(hook);
  return () => {
    interruptHooks.delete(hook);
    if (interruptHooks.size === 0) for (const signal of INTERRUPT_SIGNALS) process.off(signal, onInterrupt);
  };
}

function onInterrupt(signal: NodeJS.Signals): void {
  if (daemonsListening > 0) return;
  for (const hook of [...interruptHooks]) {
    try {
      hook();
    } catch {
      // the others still run, and the signal still ends the process
    }
  }
  interruptHooks.clear();
  for (const s of INTERRUPT_SIGNALS) process.off(s, onInterrupt);
  // Re-raised with no listener left (unless the program has its own), so Node's default applies.
  process.kill(process.pid, signal);
}
