/**
 * Readiness of a just-started child: the first newline on fd 3 (s6's model, any language), or a 2xx
 * from an HTTP probe, within a timeout. Settles never when the child exits first (the caller races
 * the exit).
 */
import { onAbort, pause } from '../util/abort.js';
import type { ReadyConfig } from './config.js';
import type { ProcessHandle } from './kernel.js';
import { substitute, type TemplateVars } from './template.js';

/** Resolves when `child` is ready; rejects with the reason when the timeout passes first. */
export async function waitReady(child: ProcessHandle, r: ReadyConfig, vars: TemplateVars): Promise<void> {
  if (r.kind === 'none') return;
  const timeout = new AbortController();
  const timer = setTimeout(() => timeout.abort(), r.timeoutMs);
  try {
    if (r.kind === 'fd') {
      let off = (): void => undefined;
      try {
        await Promise.race([
          child.ready,
          new Promise<never>((_, reject) => {
            off = onAbort(timeout.signal, () =>
              reject(new Error(`no newline on fd 3 within ${r.timeoutMs}ms`)),
            );
          }),
        ]);
      } finally {
        off();
      }
      return;
    }
    const url = substitute(r.url, { ...vars, pid: child.pid });
    let gone = false;
    void child.exited.then(() => (gone = true));
    while (!gone) {
      if (timeout.signal.aborted) throw new Error(`GET ${url} not 2xx within ${r.timeoutMs}ms`);
      try {
        const res = await fetch(url, { signal: AbortSignal.timeout(Math.max(100, r.intervalMs)) });
        await res.arrayBuffer();
        if (res.ok) return;
      } catch {
        // not listening yet
      }
      await pause(r.intervalMs, timeout.signal);
    }
    await new Promise(() => undefined); // the exit wins the race
  } finally {
    clearTimeout(timer);
  }
}
