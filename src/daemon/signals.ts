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

/** Installs the listeners; returns the function that removes them (idempotent). */
export function listenToProcess(handlers: ProcessEventHandlers): () => void {
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
