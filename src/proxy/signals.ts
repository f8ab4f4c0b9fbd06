/**
 * TEMPORARY signal adapter until the daemon runtime (Contract B, `src/daemon/`) lands: SIGHUP
 * reloads; the first SIGTERM/SIGINT stops gracefully (workers drain), a second one forces.
 */
export interface SignalHandlers {
  reload(): void;
  stop(force: boolean): void;
}

/** Installs the handlers; returns a function that removes them. */
export function handleSignals(h: SignalHandlers): () => void {
  let stops = 0;
  const onHup = (): void => h.reload();
  const onStop = (): void => h.stop(++stops > 1);
  process.on('SIGHUP', onHup);
  process.on('SIGTERM', onStop);
  process.on('SIGINT', onStop);
  return () => {
    process.off('SIGHUP', onHup);
    process.off('SIGTERM', onStop);
    process.off('SIGINT', onStop);
  };
}
