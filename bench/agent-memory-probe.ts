/**
 * Loaded into a `muster agent` process with `--import` by bench/agent-memory.ts: on SIGUSR2 it writes
 * the process's memory as V8 and the kernel see it to `$MUSTER_MEMORY_PROBE_OUT` (JSON). Nothing else
 * runs in the agent, so the probe itself costs a few KB.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { getHeapCodeStatistics, getHeapSpaceStatistics } from 'node:v8';

export interface MemoryProbe {
  memoryUsage: NodeJS.MemoryUsage;
  /** space name → bytes used and physically committed. */
  spaces: Record<string, { used: number; physical: number }>;
  code: Record<string, number>;
  threads: number;
}

const out = process.env.MUSTER_MEMORY_PROBE_OUT;
if (out !== undefined) {
  process.on('SIGUSR2', () => {
    const probe: MemoryProbe = {
      memoryUsage: process.memoryUsage(),
      spaces: Object.fromEntries(
        getHeapSpaceStatistics().map((s) => [
          s.space_name,
          { used: s.space_used_size, physical: s.physical_space_size },
        ]),
      ),
      code: { ...getHeapCodeStatistics() },
      threads: Number(/Threads:\s+(\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))?.[1] ?? 0),
    };
    writeFileSync(out, JSON.stringify(probe));
  });
}
