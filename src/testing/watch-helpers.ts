/** Helpers for tests that consume watches: bounded waits, never fixed sleeps. */
import type { Watch, WatchBatch, WatchEvent } from '../store/index.js';

/**
 * Reads batches from `watch` until `done(events, batch)` returns true; rejects after `timeoutMs`
 * with a message listing what arrived. Returns every event seen (progress batches are not events).
 */
export async function collectUntil(
  watch: Watch,
  done: (events: readonly WatchEvent[], batch: WatchBatch) => boolean,
  timeoutMs = 5000,
): Promise<{ events: WatchEvent[]; batches: WatchBatch[] }> {
  const events: WatchEvent[] = [];
  const batches: WatchBatch[] = [];
  const iterator = watch[Symbol.asyncIterator]();
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () =>
        reject(
          new Error(
            `watch condition not met within ${timeoutMs} ms; got ${events.length} events: ` +
              events
                .slice(-10)
                .map((e) => `${e.type} ${e.kv.key}@${e.kv.modRevision}`)
                .join(', '),
          ),
        ),
      timeoutMs,
    );
  });
  try {
    for (;;) {
      const r = await Promise.race([iterator.next(), timeout]);
      if (r.done === true)
        throw new Error(`watch ended before the condition was met (${events.length} events)`);
      batches.push(r.value);
      if (r.value.type === 'events') events.push(...r.value.events);
      if (done(events, r.value)) return { events, batches };
    }
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Waits until `predicate()` is true, polling every `intervalMs`; rejects after `timeoutMs`, also when
 * a check itself has not returned by then (a probe that hangs must not hang the test).
 */
export async function waitFor(
  predicate: () => boolean | Promise<boolean>,
  {
    timeoutMs = 5000,
    intervalMs = 10,
    what = 'condition',
  }: { timeoutMs?: number; intervalMs?: number; what?: string } = {},
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const met = await withTimeout(
      Promise.resolve().then(predicate),
      Math.max(deadline - Date.now(), 0) + intervalMs,
      `${what} not met within ${timeoutMs} ms (its last check had not returned)`,
    );
    if (met) return;
    if (Date.now() > deadline) throw new Error(`${what} not met within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** Settles as `promise` does, or rejects with `message` after `ms` (the timer is cleared either way). */
export async function withTimeout<T>(promise: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(message)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
