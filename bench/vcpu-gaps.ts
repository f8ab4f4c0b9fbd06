/**
 * Where the host took a vCPU away from this machine. `perf record -a -e cpu-clock -F HZ` samples every
 * CPU at a fixed rate from a timer interrupt, the idle task included, so a stretch with no sample at
 * all on one CPU is time the hypervisor did not run that vCPU: whatever the guest had on it — a proxy
 * worker, the backend, the load generator — was frozen, and nothing inside the guest (its own CPU time,
 * its scheduler's run queues) records it; this machine's kernel reports no steal time. A request is
 * "in a gap" when the interval from its send to its response overlaps one (`gapMsWithin` > 0).
 *
 * Opt-in for the benches (`--vcpu-gaps`): it needs `perf` and the right to sample the whole machine,
 * and the sampling interrupts cost a little of every path's time (the same for each path of a round).
 */
import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { rmSync } from 'node:fs';
import { promisify } from 'node:util';
import { findBinary } from '../src/testing/index.js';

/** A stretch without samples on one CPU, in epoch microseconds (h2load's log clock). */
export interface VcpuGap {
  readonly cpu: number;
  readonly start: number;
  readonly end: number;
}

/** The `perf` binary when `--vcpu-gaps` is among `args` (saying so through `say` when it is not on PATH). */
export function vcpuGapsPerf(args: readonly string[], say: (line: string) => void): string | undefined {
  if (!args.includes('--vcpu-gaps')) return undefined;
  const perf = findBinary('perf');
  if (perf === undefined)
    say('  --vcpu-gaps: perf is not on PATH (apt-get install linux-perf): measured without it');
  return perf;
}

/** Sampling rate: a gap is `minGapMs` with no sample where `HZ × minGapMs / 1000` were due. */
const HZ = 1000;

/** The `perf` arguments that sample every CPU on CLOCK_MONOTONIC while `command` runs (or until SIGINT). */
export function perfRecordArgs(out: string, command: readonly string[] = []): string[] {
  const base = ['record', '-a', '-k', 'mono', '-e', 'cpu-clock', '-F', String(HZ), '-q', '-o', out];
  return command.length === 0 ? base : [...base, '--', ...command];
}

/**
 * Samples every CPU from now until `stop()`, which returns the gaps found and removes `out`; later
 * calls return the same result (a bench's `finally` may call it again, so perf never outlives it).
 */
export function recordVcpuGaps(perf: string, out: string): { stop(): Promise<VcpuGap[]> } {
  const child = spawn(perf, perfRecordArgs(out), { stdio: 'ignore' });
  let stopped: Promise<VcpuGap[]> | undefined;
  return {
    stop() {
      stopped ??= (async () => {
        if (child.exitCode === null && child.signalCode === null) {
          child.kill('SIGINT');
          await once(child, 'exit');
        }
        try {
          return await readVcpuGaps(perf, out);
        } finally {
          rmSync(out, { force: true });
        }
      })();
      return stopped;
    },
  };
}

/** Epoch µs minus CLOCK_MONOTONIC µs, now (perf's `-k mono` timestamps are the latter). */
export function monoToEpochUs(): number {
  const epochUs = (performance.timeOrigin + performance.now()) * 1000;
  return epochUs - Number(process.hrtime.bigint() / 1000n);
}

/** Reads `out` (from `perfRecordArgs`) and returns every stretch of at least `minGapMs` without a sample on a CPU. */
export async function readVcpuGaps(perf: string, out: string, minGapMs = 5): Promise<VcpuGap[]> {
  const { stdout } = await promisify(execFile)(perf, ['script', '-i', out, '-F', 'cpu,time'], {
    encoding: 'utf8',
    maxBuffer: 256 * 1024 * 1024,
  });
  const offset = monoToEpochUs();
  const byCpu = new Map<number, number[]>();
  for (const line of stdout.split('\n')) {
    const m = /^\s*\[(\d+)\]\s+(\d+\.\d+):/.exec(line);
    if (m === null) continue;
    const cpu = Number(m[1]);
    let list = byCpu.get(cpu);
    if (list === undefined) byCpu.set(cpu, (list = []));
    list.push(Number(m[2]) * 1e6 + offset);
  }
  const gaps: VcpuGap[] = [];
  for (const [cpu, times] of byCpu) {
    times.sort((a, b) => a - b);
    for (let i = 1; i < times.length; i++) {
      if (times[i]! - times[i - 1]! >= minGapMs * 1000)
        gaps.push({ cpu, start: times[i - 1]!, end: times[i]! });
    }
  }
  return gaps.sort((a, b) => a.start - b.start);
}

/** Milliseconds of `gaps` (any CPU) inside [start, end] (epoch µs); > 0 when the interval overlaps one. */
export function gapMsWithin(gaps: readonly VcpuGap[], start: number, end: number): number {
  let us = 0;
  for (const g of gaps) us += Math.max(0, Math.min(end, g.end) - Math.max(start, g.start));
  return us / 1000;
}
