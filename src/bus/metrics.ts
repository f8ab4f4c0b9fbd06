/**
 * Bus metrics: Prometheus (prom-client) per peer and method, and statsd (hot-shots) when configured.
 */
import { StatsD } from 'hot-shots';
import { Counter, Gauge, Registry } from 'prom-client';
import { CounterCache, FastHistogram } from '../daemon/internal.js';
import type { StatsdOptions } from './types.js';

/** Latency buckets in seconds: 50 µs … 5 s (loopback calls are tens of microseconds). */
const LATENCY_BUCKETS = [
  0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
];

export interface QueueSource {
  /** Unsent bytes per peer, read when metrics are collected. */
  queues(): Iterable<[peer: string, bytes: number, inFlight: number]>;
}

export class BusMetrics {
  readonly registry: Registry;
  readonly #calls: FastHistogram;
  readonly #handled: FastHistogram;
  readonly #dropped: Counter<'peer' | 'topic' | 'reason'>;
  readonly #reconnects: Counter<'peer'>;
  readonly #connections: Counter<'direction' | 'event'>;
  /** Per-message counters, flushed into prom-client when scraped (see counter-cache.ts). */
  readonly #published = new CounterCache<'topic'>();
  readonly #delivered = new CounterCache<'topic'>();
  readonly #duplicates = new CounterCache<'topic'>();
  readonly #statsd: StatsD | undefined;

  constructor(registry: Registry | undefined, statsd: StatsdOptions | undefined, source: QueueSource) {
    this.registry = registry ?? new Registry();
    const registers = [this.registry];
    this.#calls = new FastHistogram({
      name: 'muster_bus_call_duration_seconds',
      help: 'Calls made by this node, by service, method, peer node and outcome (ok or the error code)',
      labelNames: ['service', 'method', 'peer', 'outcome'],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.#handled = new FastHistogram({
      name: 'muster_bus_handled_duration_seconds',
      help: 'Calls handled by this node, by service, method and outcome',
      labelNames: ['service', 'method', 'outcome'],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.#dropped = new Counter({
      name: 'muster_bus_dropped_total',
      help: 'Publications dropped, by peer, topic and reason (queue-full, expired, not-connected, not-acknowledged; unconfirmed: written to a connection that closed before the subscriber confirmed it, maybe delivered)',
      labelNames: ['peer', 'topic', 'reason'],
      registers,
    });
    this.#reconnects = new Counter({
      name: 'muster_bus_reconnects_total',
      help: 'Connections opened to a peer address this node was connected to before',
      labelNames: ['peer'],
      registers,
    });
    this.#connections = new Counter({
      name: 'muster_bus_connections_total',
      help: 'Connections opened and closed, by direction',
      labelNames: ['direction', 'event'],
      registers,
    });
    const published = this.#published;
    new Counter({
      name: 'muster_bus_published_total',
      help: 'Messages published by this node',
      labelNames: ['topic'],
      registers,
      collect() {
        published.flush(this);
      },
    });
    const delivered = this.#delivered;
    new Counter({
      name: 'muster_bus_delivered_total',
      help: 'Messages delivered to this node\u2019s subscribers',
      labelNames: ['topic'],
      registers,
      collect() {
        delivered.flush(this);
      },
    });
    const duplicates = this.#duplicates;
    new Counter({
      name: 'muster_bus_duplicates_total',
      help: 'Messages this node received again within the de-duplication window and did not deliver',
      labelNames: ['topic'],
      registers,
      collect() {
        duplicates.flush(this);
      },
    });
    new Gauge({
      name: 'muster_bus_queue_bytes',
      help: 'Unsent bytes queued to each peer',
      labelNames: ['peer'],
      registers,
      collect() {
        this.reset();
        for (const [peer, bytes] of source.queues()) this.set({ peer }, bytes);
      },
    });
    new Gauge({
      name: 'muster_bus_in_flight',
      help: 'Calls in flight to each peer',
      labelNames: ['peer'],
      registers,
      collect() {
        this.reset();
        for (const [peer, , inFlight] of source.queues()) this.set({ peer }, inFlight);
      },
    });
    this.#statsd =
      statsd === undefined
        ? undefined
        : new StatsD({
            host: statsd.host ?? '127.0.0.1',
            port: statsd.port ?? 8125,
            prefix: statsd.prefix ?? 'muster.bus.',
            // Batch datagrams: a call per datagram would cost more than the call.
            maxBufferSize: 8192,
            bufferFlushInterval: 100,
            errorHandler: () => undefined,
          });
  }

  call(service: string, method: string, peer: string, outcome: string, seconds: number): void {
    this.#calls.observe([service, method, peer, outcome], seconds);
    this.#statsd?.timing(`call.${service}.${method}`, seconds * 1000, { outcome });
  }

  handled(service: string, method: string, outcome: string, seconds: number): void {
    this.#handled.observe([service, method, outcome], seconds);
    this.#statsd?.timing(`handled.${service}.${method}`, seconds * 1000, { outcome });
  }

  dropped(peer: string, topic: string, reason: string, count = 1): void {
    this.#dropped.inc({ peer, topic, reason }, count);
    this.#statsd?.increment('dropped', count, { topic, reason });
  }

  connection(direction: 'in' | 'out', event: 'open' | 'close', reconnectOf?: string): void {
    this.#connections.inc({ direction, event });
    if (reconnectOf !== undefined) {
      this.#reconnects.inc({ peer: reconnectOf });
      this.#statsd?.increment('reconnects');
    }
  }

  published(topic: string): void {
    this.#published.inc(topic, () => ({ topic }));
    this.#statsd?.increment('published', { topic });
  }

  delivered(topic: string): void {
    this.#delivered.inc(topic, () => ({ topic }));
    this.#statsd?.increment('delivered', { topic });
  }

  duplicate(topic: string): void {
    this.#duplicates.inc(topic, () => ({ topic }));
  }

  close(): void {
    this.#statsd?.close(() => undefined);
  }
}
