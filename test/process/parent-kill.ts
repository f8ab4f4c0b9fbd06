/**
 * The death-of-parent experiment, shared by the test and the soak: start the parent fixture, wait
 * for every descendant's pid, SIGKILL the parent, and measure how long until every descendant is
 * dead (a zombie counts as dead: it runs nothing and holds nothing but its pid).
 */
import { isAlive, readStartTime, spawnProcess } from '../../src/process/index.js';

const FIXTURE = new URL('./fixtures/parent.js', import.meta.url).pathname;

export interface ParentKillResult {
  /** Every descendant the parent reported. */
  readonly pids: readonly number[];
  /** SIGKILL of the parent → the last descendant dead, ms (Infinity when some survived). */
  readonly ms: number;
  /** Descendants still alive `timeoutMs` after the kill. */
  readonly survivors: readonly number[];
  /** The pid started outside the kernel (with `outside`). */
  readonly outside: number | undefined;
}

export interface ParentKillOptions {
  readonly children?: number;
  /** Also start one process outside the kernel (the negative control). */
  readonly outside?: boolean;
  /** Some grandchildren leave their group (setsid): only the marker scan finds them. */
  readonly escapees?: boolean;
  /** The parent SIGKILLs its guard (and waits for the kernel to replace it) before it reports. */
  readonly killGuard?: boolean;
  /** The children drop the `MUSTER_PROCESS` marker: only the guard's group list can find them. */
  readonly unmarked?: boolean;
  /** Every child is a spare forked ahead (`prewarm`), and `SPARES` more wait at the gate. */
  readonly prewarm?: boolean;
  /** Run the parent without setpriv (the guard alone). */
  readonly noSetpriv?: boolean;
  /** How long the checker waits for the descendants to die. Default 2 s. */
  readonly timeoutMs?: number;
}

export async function parentKill(options: ParentKillOptions = {}): Promise<ParentKillResult> {
  let line: string | undefined;
  let onLine: () => void = () => undefined;
  const parent = await spawnProcess({
    command: [process.execPath, FIXTURE],
    label: 'parent-fixture',
    env: {
      CHILDREN: String(options.children ?? 20),
      OUTSIDE: options.outside === true ? '1' : '0',
      ESCAPEES: options.escapees === true ? '1' : '0',
      KILL_GUARD: options.killGuard === true ? '1' : '0',
      UNMARKED: options.unmarked === true ? '1' : '0',
      PREWARM: options.prewarm === true ? '1' : '0',
      MUSTER_NO_SETPRIV: options.noSetpriv === true ? '1' : '0',
    },
    onLine: (stream, text) => {
      if (stream === 'stdout' && text.startsWith('{')) {
        line = text;
        onLine();
      } else if (stream === 'stderr') process.stderr.write(`parent-fixture: ${text}\n`);
    },
  });
  try {
    await new Promise<void>((resolve, reject) => {
      onLine = resolve;
      void parent.exited.then((e) =>
        reject(
          new Error(`the parent fixture exited early (${JSON.stringify(e)}): ${parent.tail().join('\n')}`),
        ),
      );
    });
    const { pids, outside } = JSON.parse(line!) as { pids: number[]; outside?: number };
    const known = pids.map((pid) => ({ pid, startTime: readStartTime(pid) }));
    const t0 = performance.now();
    process.kill(parent.pid, 'SIGKILL');
    const deadline = t0 + (options.timeoutMs ?? 2000);
    let alive = known;
    for (;;) {
      alive = alive.filter((p) => p.startTime !== undefined && isAlive(p.pid, p.startTime));
      if (alive.length === 0) return { pids, outside, ms: performance.now() - t0, survivors: [] };
      if (performance.now() > deadline)
        return { pids, outside, ms: Infinity, survivors: alive.map((p) => p.pid) };
      await new Promise((resolve) => setImmediate(resolve));
    }
  } finally {
    await parent.kill();
  }
}

/** The p-th percentile (0–100) of `values`. */
export function percentile(values: readonly number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] ?? NaN;
}
