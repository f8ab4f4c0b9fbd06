/**
 * Loaded into muster's proxy processes by `npm run bench -- proxy-stalls` (`node --import`; the
 * master's workers inherit it): the event loop's stalls — a 1 ms interval timer firing more than
 * `STALL_MS` late — and garbage collections over 1 ms, on CLOCK_MONOTONIC in milliseconds (the clock
 * of `perf … -k mono`), written to `$MUSTER_LOOP_PROBE_DIR/<pid>.json` when the process exits.
 * A diagnosis for the bench, never loaded by muster itself.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance, PerformanceObserver } from 'node:perf_hooks';

/** What one process recorded. */
export interface LoopProbe {
  readonly pid: number;
  readonly argv: string[];
  /** [start ms, length ms]: the loop ran no timer in between. */
  readonly stalls: [number, number][];
  /** [start ms, duration ms, V8's kind: 1 scavenge, 2 mark-compact, 4 incremental, 8 weak callbacks]. */
  readonly gcs: [number, number, number][];
}

const STALL_MS = 4;
const dir = process.env['MUSTER_LOOP_PROBE_DIR'];
// the workers only: a master's own 1 ms timer would be one more thread waking on the machine
const isWorker = process.argv[1]?.endsWith('worker-main.js') === true;
if (dir !== undefined && isWorker) {
  const mono = (): number => Number(process.hrtime.bigint()) / 1e6;
  const record: LoopProbe = { pid: process.pid, argv: process.argv.slice(1), stalls: [], gcs: [] };
  let last = mono();
  setInterval(() => {
    const now = mono();
    if (now - last > STALL_MS) record.stalls.push([last, now - last]);
    last = now;
  }, 1).unref();
  const offset = mono() - performance.now();
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      const kind = (e as PerformanceEntry & { detail?: { kind?: number } }).detail?.kind ?? 0;
      if (e.duration > 1) record.gcs.push([offset + e.startTime, e.duration, kind]);
    }
  }).observe({ entryTypes: ['gc'] });
  process.on('exit', () => writeFileSync(join(dir, `${process.pid}.json`), JSON.stringify(record)));
}
