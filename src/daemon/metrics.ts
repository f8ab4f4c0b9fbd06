/** Each daemon's Prometheus registry: the process's default metrics plus the runtime's own. */
import { collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client';

/** The runtime's own metrics, registered in the daemon's registry. */
export interface RuntimeMetrics {
  /** `muster_daemon_state{state}`: 1 for the current state, 0 for the others. */
  readonly state: Gauge<'state'>;
  /** `muster_daemon_reloads_total{result}`: SIGHUP reloads, `ok` or `error`. */
  readonly reloads: Counter<'result'>;
}

/** The states a daemon goes through (see docs/daemon.md for the diagram). */
export const DAEMON_STATES = ['starting', 'running', 'stopping', 'forcing', 'stopped'] as const;
export type DaemonState = (typeof DAEMON_STATES)[number];

/**
 * How often prom-client's event-loop monitor (`nodejs_eventloop_lag_*`) samples: 100 ms. Its default,
 * 10 ms, is a timer that wakes every daemon 100 times a second whether anyone scrapes or not — 2.7 ms
 * of CPU per second idle on this machine, against 0.3 ms at 100 ms, and a steady competitor for the
 * cores of a host running a latency-bound bus. Any stall of 100 ms or more is still recorded in full;
 * the stalls that matter to muster (a session's renewal, a held request) are longer than that.
 */
export const EVENT_LOOP_MONITOR_MS = 100;

/**
 * A new registry with the runtime's metrics and, when `defaults` (the daemon serves `/metrics`),
 * prom-client's default process metrics (`process_cpu_seconds_total`,
 * `process_resident_memory_bytes`, `nodejs_eventloop_lag_seconds`…), its event-loop monitor
 * sampling every {@link EVENT_LOOP_MONITOR_MS}. A daemon without `/metrics` pays for none of it.
 */
export function createDaemonRegistry(
  name: string,
  defaults: boolean,
): { registry: Registry; runtime: RuntimeMetrics } {
  const registry = new Registry();
  if (defaults)
    collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: EVENT_LOOP_MONITOR_MS });
  const info = new Gauge({
    name: 'muster_daemon_info',
    help: 'Always 1; its label names the daemon (serve, agent, proxy, relay, bus…).',
    labelNames: ['daemon'],
    registers: [registry],
  });
  info.set({ daemon: name }, 1);
  const state = new Gauge({
    name: 'muster_daemon_state',
    help: 'Lifecycle state of the daemon: 1 for the current state, 0 for the others.',
    labelNames: ['state'],
    registers: [registry],
  });
  const reloads = new Counter({
    name: 'muster_daemon_reloads_total',
    help: 'Reloads requested with SIGHUP, by result (ok or error).',
    labelNames: ['result'],
    registers: [registry],
  });
  reloads.inc({ result: 'ok' }, 0);
  reloads.inc({ result: 'error' }, 0);
  return { registry, runtime: { state, reloads } };
}

/** Sets the state gauge: 1 for `current`, 0 for every other state. */
export function setStateGauge(gauge: Gauge<'state'>, current: DaemonState): void {
  for (const s of DAEMON_STATES) gauge.set({ state: s }, s === current ? 1 : 0);
}
