/** The proxy's Prometheus metrics (one registry per worker; the master aggregates them). */
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { CounterCache, FastHistogram } from '../daemon/internal.js';
import type { RoutingSource } from './routing-source.js';

export interface ProxyMetrics {
  readonly registry: Registry;
  /** `muster_proxy_requests_total{backend,status}`: count through {@link ProxyMetrics.countRequest}. */
  readonly requests: Counter<'backend' | 'status'>;
  /** `muster_proxy_upstream_seconds{backend}` (seconds to response headers). */
  readonly upstreamSeconds: FastHistogram;
  /** One request answered (cheap: the daemon runtime's CounterCache). */
  countRequest(backend: string, status: number | string): void;
  readonly held: Gauge;
  readonly holdSeconds: Histogram<'outcome'>;
  readonly reloads: Counter;
}

type Labels = Record<'backend' | 'status', string>;

export function createProxyMetrics(
  source: () => RoutingSource | undefined,
  held: () => number,
): ProxyMetrics {
  const registry = new Registry();
  const pending = new CounterCache<'backend' | 'status'>();
  const requests = new Counter({
    name: 'muster_proxy_requests_total',
    help: 'Requests answered, by backend (host:port, or "-" when none was reached) and status',
    labelNames: ['backend', 'status'] as const,
    registers: [registry],
    collect() {
      pending.flush(this);
    },
  });
  const upstreamSeconds = new FastHistogram({
    name: 'muster_proxy_upstream_seconds',
    help: 'Time from sending a request upstream to its response headers',
    labelNames: ['backend'],
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60],
    registers: [registry],
    maxSeries: 10_000,
  });
  // the key string and label maker of each (backend, status), made once: no string or closure per request
  type Slot = { key: string; labels: () => Labels };
  const slots = new Map<string, Map<number | string, Slot>>();
  const countRequest = (backend: string, status: number | string): void => {
    let byStatus = slots.get(backend);
    if (byStatus === undefined) {
      if (slots.size >= 10_000) slots.clear(); // the same bound on label cardinality as the cache's
      slots.set(backend, (byStatus = new Map<number | string, Slot>()));
    }
    let slot = byStatus.get(status);
    if (slot === undefined) {
      const labels: Labels = { backend, status: String(status) };
      byStatus.set(status, (slot = { key: `${backend} ${status}`, labels: () => labels }));
    }
    pending.inc(slot.key, slot.labels);
  };
  const heldGauge = new Gauge({
    name: 'muster_proxy_held_requests',
    help: 'Requests held now, waiting for their destination',
    registers: [registry],
    collect() {
      this.set(held());
    },
  });
  const holdSeconds = new Histogram({
    name: 'muster_proxy_hold_seconds',
    help: 'How long requests were held, by outcome (released, timeout, gone)',
    labelNames: ['outcome'] as const,
    buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 120],
    registers: [registry],
  });
  const reloads = new Counter({
    name: 'muster_proxy_reloads_total',
    help: 'Reloads completed (new workers accepting, old ones draining)',
    registers: [registry],
  });
  new Gauge({
    name: 'muster_proxy_route_revision',
    help: 'The store revision the routing table reflects',
    registers: [registry],
    collect() {
      this.set(source()?.revision ?? 0);
    },
  });
  new Gauge({
    name: 'muster_proxy_route_age_seconds',
    help: 'Seconds since the routing table last changed (or was first loaded)',
    registers: [registry],
    collect() {
      const s = source();
      this.set(s === undefined || s.updatedAt === 0 ? 0 : (performance.now() - s.updatedAt) / 1000);
    },
  });
  return { registry, requests, upstreamSeconds, countRequest, held: heldGauge, holdSeconds, reloads };
}
