/**
 * The agent's Prometheus metrics, on the daemon's registry: owned partitions, hand-offs and their
 * duration, restarts, back-off, last exit code, check states, the session deadline margin, and each
 * child's RSS and CPU time read from /proc at scrape time.
 */
import { readFileSync } from 'node:fs';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { Supervisor } from './supervisor.js';

/** What the metrics read from the agent at scrape time. */
export interface MetricsSource {
  readonly supervisors: ReadonlyMap<string, Supervisor>;
  deadlineMarginMs(): number | undefined;
}

const PAGE = 4096;
const TICKS = 100; // USER_HZ on Linux

/** RSS bytes and CPU seconds (user + system) of a process, from /proc; undefined once it is gone. */
export function procUsage(pid: number): { rss: number; cpu: number } | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const cpu = (Number(f[11]) + Number(f[12])) / TICKS;
    const rss = Number(f[21]) * PAGE;
    return { rss, cpu };
  } catch {
    return undefined;
  }
}

const CHECK_VALUE = { passing: 0, warning: 1, failing: 2 } as const;

export class AgentMetrics {
  readonly #handoffs: Counter<'kind'>;
  readonly #handoffSeconds: Histogram;
  readonly #restarts: Gauge<'partition'>;
  readonly #releaseStart = new Map<string, number>();

  constructor(registry: Registry, source: MetricsSource) {
    const sups = (): Supervisor[] => [...source.supervisors.values()];
    new Gauge({
      name: 'muster_agent_owned_partitions',
      help: 'Partitions this agent owns (with a supervisor)',
      registers: [registry],
      collect() {
        this.set(source.supervisors.size);
      },
    });
    this.#handoffs = new Counter({
      name: 'muster_agent_handoffs_total',
      help: 'Ownership changes: acquired, released (graceful), lost (session or key)',
      labelNames: ['kind'],
      registers: [registry],
    });
    this.#handoffSeconds = new Histogram({
      name: 'muster_agent_release_seconds',
      help: "From the release request to the child's group gone",
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers: [registry],
    });
    this.#restarts = new Gauge({
      name: 'muster_agent_child_restarts',
      help: "Restarts of the partition's child since this agent acquired it",
      labelNames: ['partition'],
      registers: [registry],
    });
    new Gauge({
      name: 'muster_agent_child_backoff_seconds',
      help: 'Current back-off delay before the next start (0 when not backing off)',
      labelNames: ['partition'],
      registers: [registry],
      collect() {
        this.reset();
        for (const s of sups()) this.set({ partition: s.partition }, s.row().backoffMs / 1000);
      },
    });
    new Gauge({
      name: 'muster_agent_child_last_exit_code',
      help: "The child's last exit code (128+n for a signal)",
      labelNames: ['partition'],
      registers: [registry],
      collect() {
        this.reset();
        for (const s of sups()) {
          const e = s.row().lastExit;
          if (e !== null) this.set({ partition: s.partition }, e.code ?? 128);
        }
      },
    });
    new Gauge({
      name: 'muster_agent_child_state',
      help: "1 for the child's current state",
      labelNames: ['partition', 'state'],
      registers: [registry],
      collect() {
        this.reset();
        for (const s of sups()) this.set({ partition: s.partition, state: s.state }, 1);
      },
    });
    new Gauge({
      name: 'muster_agent_check_status',
      help: 'Per-partition check status: 0 passing, 1 warning, 2 failing',
      labelNames: ['partition', 'check'],
      registers: [registry],
      collect() {
        this.reset();
        for (const s of sups())
          for (const [check, st] of Object.entries(s.row().checks))
            this.set({ partition: s.partition, check }, CHECK_VALUE[st]);
      },
    });
    new Gauge({
      name: 'muster_agent_session_deadline_margin_seconds',
      help: "Time left until the session's validity deadline (children stop when it falls below stopMargin)",
      registers: [registry],
      collect() {
        const m = source.deadlineMarginMs();
        if (m !== undefined) this.set(m / 1000);
      },
    });
    new Gauge({
      name: 'muster_agent_child_rss_bytes',
      help: "Resident memory of the partition's child (leader process)",
      labelNames: ['partition'],
      registers: [registry],
      collect() {
        this.reset();
        for (const s of sups()) {
          const u = s.pid === undefined ? undefined : procUsage(s.pid);
          if (u) this.set({ partition: s.partition }, u.rss);
        }
      },
    });
    new Gauge({
      name: 'muster_agent_child_cpu_seconds',
      help: "CPU time (user + system) of the partition's child (leader process)",
      labelNames: ['partition'],
      registers: [registry],
      collect() {
        this.reset();
        for (const s of sups()) {
          const u = s.pid === undefined ? undefined : procUsage(s.pid);
          if (u) this.set({ partition: s.partition }, u.cpu);
        }
      },
    });
  }

  handoff(kind: 'acquired' | 'released' | 'lost'): void {
    this.#handoffs.inc({ kind });
  }

  releaseStarted(partition: string, t0: number): void {
    this.#releaseStart.set(partition, t0);
  }

  releaseDone(partition: string, _lifetimeMs: number): void {
    const t0 = this.#releaseStart.get(partition);
    this.#releaseStart.delete(partition);
    if (t0 !== undefined) this.#handoffSeconds.observe((performance.now() - t0) / 1000);
  }

  changed(s: Supervisor): void {
    this.#restarts.set({ partition: s.partition }, s.row().restarts);
  }
}
