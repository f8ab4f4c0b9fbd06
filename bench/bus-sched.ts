/** Scheduler figures from /proc for the bus benchmarks (bench/bus-tail.ts, bench/bus-peer.ts). */
import { openSync, readdirSync, readFileSync, readSync } from 'node:fs';

/**
 * This thread's scheduler figures so far, in ms: `[0]` on a CPU, `[1]` runnable but waiting for one
 * (`/proc/thread-self/schedstat`, first two fields), one `pread` per `read()`. Make it on the thread it
 * is about; `read()` refreshes the same array (nothing allocated but the text it parses).
 */
export function schedReader(): { readonly now: Float64Array; read(): Float64Array } {
  const now = new Float64Array(2);
  let fd: number | undefined;
  try {
    fd = openSync('/proc/thread-self/schedstat', 'r');
  } catch {
    return { now, read: () => now };
  }
  const buf = Buffer.alloc(128);
  return {
    now,
    read: () => {
      const n = readSync(fd, buf, 0, 128, 0);
      const line = buf.toString('latin1', 0, n);
      const a = line.indexOf(' ');
      now[0] = Number(line.slice(0, a)) / 1e6;
      now[1] = Number(line.slice(a + 1, line.indexOf(' ', a + 1))) / 1e6;
      return now;
    },
  };
}

/** Per thread: [comm, ns on a CPU, ns runnable and waiting, times it ran (≈ wake-ups)]. */
export type Sched = Map<string, [string, number, number, number]>;

export function readSched(pid: number): Sched {
  const out: Sched = new Map();
  let tids: string[] = [];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of tids) {
    try {
      const [run, wait, slices] = readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ');
      const comm = readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim();
      out.set(tid, [comm, Number(run), Number(wait), Number(slices)]);
    } catch {
      // the thread exited
    }
  }
  return out;
}

/**
 * What process `pid`'s threads did between two readings: `[main thread ns on a CPU, ns waiting, times
 * run, other threads ns on a CPU, ns waiting, times run]`.
 */
export function schedDelta(pid: number, before: Sched, after: Sched): number[] {
  const d = [0, 0, 0, 0, 0, 0];
  for (const [tid, [comm, run1, wait1, n1]] of after) {
    const [, run0, wait0, n0] = before.get(tid) ?? [comm, 0, 0, 0];
    const at = tid === String(pid) ? 0 : 3;
    d[at] = (d[at] as number) + run1 - run0;
    d[at + 1] = (d[at + 1] as number) + wait1 - wait0;
    d[at + 2] = (d[at + 2] as number) + n1 - n0;
  }
  return d;
}

/** Busy and total jiffies of the whole machine (`/proc/stat`). */
export function readCpu(): [number, number] {
  const f = (readFileSync('/proc/stat', 'utf8').split('\n')[0] as string).split(/\s+/).slice(1).map(Number);
  const total = f.reduce((a, b) => a + b, 0);
  const idle = (f[3] ?? 0) + (f[4] ?? 0);
  return [total - idle, total];
}
