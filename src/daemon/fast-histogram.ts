/**
 * A Prometheus histogram for hot paths (every bus call, every proxied request), registered in a
 * prom-client `Registry` as a custom metric (an object with `name`, `help`, `type` and `get()`,
 * which is all the registry reads — and what the proxy master's `AggregatorRegistry` merges).
 *
 * prom-client's `Histogram.observe(labels, v)` builds and hashes a label object on every call and
 * finds the bucket through a float-keyed object: ~0.9 µs and ~1 KB of garbage per observation,
 * measured on the bus (and ~2.9 µs per request with the proxy's counter). Here a series is found by
 * walking one map per label (no key string is built: joining the bus's four labels per call was ~3 %
 * of a bus server's CPU) and an observation is an array increment; the cumulative buckets are
 * computed only when scraped. The exposition is the same as prom-client's (`_bucket{le,…}`, `_sum`,
 * `_count`).
 */
import type { Registry } from 'prom-client';

interface Series {
  readonly labels: Record<string, string>;
  /** Per bucket (not cumulative); the last one is +Inf. */
  readonly counts: Float64Array;
  sum: number;
  count: number;
}

/** Label value → the next label's map, or (for the last label) the series. */
type Level = Map<string, Level | Series>;

export class FastHistogram {
  readonly name: string;
  readonly help: string;
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  readonly #labelNames: readonly string[];
  readonly #bounds: readonly number[];
  readonly #root: Level = new Map();
  /** Every series, in creation order, for the scrape. */
  readonly #series: Series[] = [];
  readonly #maxSeries: number;

  /** `maxSeries`: a bound on label cardinality — past it the series start again (default: none). */
  constructor(options: {
    name: string;
    help: string;
    labelNames: readonly string[];
    buckets: readonly number[];
    registers: readonly Registry[];
    maxSeries?: number;
  }) {
    this.name = options.name;
    this.help = options.help;
    this.#labelNames = options.labelNames;
    this.#bounds = options.buckets;
    this.#maxSeries = options.maxSeries ?? Number.POSITIVE_INFINITY;
    for (const r of options.registers) r.registerMetric(this as never);
  }

  /** Records `value` for the label values (in `labelNames` order). */
  observe(values: readonly string[], value: number): void {
    const s = this.#find(values) ?? this.#add(values);
    const bounds = this.#bounds;
    let i = 0;
    while (i < bounds.length && value > (bounds[i] as number)) i++;
    s.counts[i] = (s.counts[i] as number) + 1;
    s.sum += value;
    s.count++;
  }

  reset(): void {
    this.#root.clear();
    this.#series.length = 0;
  }

  #find(values: readonly string[]): Series | undefined {
    let node: Level | Series | undefined = this.#root;
    for (let i = 0; i < this.#labelNames.length; i++) {
      node = (node as Level).get(values[i] ?? '');
      if (node === undefined) return undefined;
    }
    // With no labels the root itself stands for the one series: kept under the empty value.
    return this.#labelNames.length === 0 ? (this.#root.get('') as Series | undefined) : (node as Series);
  }

  #add(values: readonly string[]): Series {
    if (this.#series.length >= this.#maxSeries) this.reset();
    const labels: Record<string, string> = {};
    this.#labelNames.forEach((n, i) => (labels[n] = values[i] ?? ''));
    const s: Series = { labels, counts: new Float64Array(this.#bounds.length + 1), sum: 0, count: 0 };
    const path = this.#labelNames.length === 0 ? [''] : this.#labelNames.map((_, i) => values[i] ?? '');
    let node = this.#root;
    for (let i = 0; i < path.length - 1; i++) {
      const v = path[i] as string;
      let next = node.get(v) as Level | undefined;
      if (next === undefined) node.set(v, (next = new Map()));
      node = next;
    }
    node.set(path[path.length - 1] as string, s);
    this.#series.push(s);
    return s;
  }

  /** What prom-client's registry formats (the same shape as its own histograms). */
  get(): {
    name: string;
    help: string;
    type: string;
    aggregator: string;
    values: { labels: Record<string, string | number>; value: number; metricName: string }[];
  } {
    const values: { labels: Record<string, string | number>; value: number; metricName: string }[] = [];
    for (const s of this.#series) {
      let acc = 0;
      this.#bounds.forEach((le, i) => {
        acc += s.counts[i] as number;
        values.push({ labels: { le, ...s.labels }, value: acc, metricName: `${this.name}_bucket` });
      });
      values.push({
        labels: { le: '+Inf', ...s.labels },
        value: s.count,
        metricName: `${this.name}_bucket`,
      });
      values.push({ labels: s.labels, value: s.sum, metricName: `${this.name}_sum` });
      values.push({ labels: s.labels, value: s.count, metricName: `${this.name}_count` });
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }
}
