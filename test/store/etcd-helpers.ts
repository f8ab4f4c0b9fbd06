/** Helpers shared by the etcd engine's test files. */
import type { Watch, WatchBatch, WatchEvent } from '../../src/store/types.js';

/** Reads batches until `done` holds; rejects after `timeoutMs` saying what arrived. */
export async function readUntil(
  watch: Watch,
  done: (events: readonly WatchEvent[], batch: WatchBatch) => boolean,
  timeoutMs = 10_000,
): Promise<{ events: WatchEvent[]; batches: WatchBatch[] }> {
  const events: WatchEvent[] = [];
  const batches: WatchBatch[] = [];
  const it = watch[Symbol.asyncIterator]();
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      const last = events.slice(-5).map((e) => `${e.type} ${e.kv.key}@${e.kv.modRevision}`);
      reject(
        new Error(
          `watch condition not met within ${timeoutMs} ms; ${events.length} events, last: ${last.join(', ')}`,
        ),
      );
    }, timeoutMs);
  });
  try {
    for (;;) {
      const r = await Promise.race([it.next(), timeout]);
      if (r.done === true) throw new Error(`watch ended after ${events.length} events`);
      batches.push(r.value);
      if (r.value.type === 'events') events.push(...r.value.events);
      if (done(events, r.value)) return { events, batches };
    }
  } finally {
    clearTimeout(timer);
  }
}

/** Checks batches are in strictly increasing revision order (progress may repeat the last one). */
export function checkOrder(batches: readonly WatchBatch[]): void {
  let last = 0;
  for (const b of batches) {
    if (b.type === 'events') {
      if (b.revision <= last)
        throw new Error(`events batch at ${b.revision} after ${last}: duplicate or out of order`);
      for (const e of b.events) {
        if (e.kv.modRevision !== b.revision)
          throw new Error(`event at ${e.kv.modRevision} in batch ${b.revision}`);
      }
    } else if (b.revision < last) {
      throw new Error(`progress ${b.revision} after ${last}`);
    }
    last = b.revision;
  }
}

export const text = (v: Uint8Array): string => Buffer.from(v).toString('utf8');

export function uniquePrefix(name: string): string {
  return `/test-${name}-${process.pid}-${Math.random().toString(36).slice(2, 8)}/`;
}
