/**
 * Per-request metrics without prom-client on the hot path. prom-client hashes the label set on every
 * `inc()`/`observe()`, even through a cached `labels()` child: measured A/B in one process, a
 * counter increment plus a histogram observation cost ~2.9 µs per request against ~0.03 µs for a
 * plain array increment — about 6 % of a worker's CPU at 20k requests/s. Here each label set is
 * looked up once (a Map of the joined label values) and updated with array arithmetic; prom-client
 * reads the totals only when scraped (a counter's `collect()` flushes; the histogram is a metric object
 * of prom-client's own JSON shape, so the master's `AggregatorRegistry` merges it like any other).
 */
import type { Counter, Registry } from 'prom-client';

/** A counter by label values, flushed into a prom-client counter when it is collected. */
export class CounterCache<L extends string> {
  readonly #pending = new Map<string, { labels: Record<L, string>; n: number }>();

  /** Call from the prom-client counter's `collect()`. */
  flush(counter: Counter<L>): void {
    for (const p of this.#pending.values()) {
      if (p.n === 0) continue;
      counter.inc(p.labels as never, p.n);
      p.n = 0;
    }
  }

  /** `key` identifies the label set (e.g. the values joined); `labels` is made only the first time. */
  inc(key: string, labels: () => Record<L, string>): void {
    let p = this.#pending.get(key);
    if (p === undefined) {
      if (this.#pending.size >= 10_000) this.#pending.clear(); // a bound on label cardinality
      this.#pending.set(key, (p = { labels: labels(), n: 0 }));
    }
    p.n++;
  }
}

interface Series {
  readonly labels: Record<string, string>;
  readonly counts: Float64Array;
  sum: number;
  count: number;
}

/** A histogram with one label, in prom-client's metric shape (`get()`), registered on `registry`. */
export class FastHistogram {
  readonly name: string;
  readonly help: string;
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  readonly #label: string;
  readonly #buckets: readonly number[];
  readonly #series = new Map<string, Series>();

  constructor(options: {
    name: string;
    help: string;
    label: string;
    buckets: readonly number[];
    registry: Registry;
  }) {
    this.name = options.name;
    this.help = options.help;
    this.#label = options.label;
    this.#buckets = options.buckets;
    options.registry.registerMetric(this as never);
  }

  /** Records `seconds` for the label value `value`. */
  observe(value: string, seconds: number): void {
    let s = this.#series.get(value);
    if (s === undefined) {
      if (this.#series.size >= 10_000) this.#series.clear();
      s = {
        labels: { [this.#label]: value },
        counts: new Float64Array(this.#buckets.length),
        sum: 0,
        count: 0,
      };
      this.#series.set(value, s);
    }
    const b = this.#buckets;
    let i = 0;
    while (i < b.length && seconds > (b[i] as number)) i++;
    if (i < b.length) s.counts[i] = (s.counts[i] as number) + 1;
    s.sum += seconds;
    s.count++;
  }

  /** prom-client's JSON form: cumulative `_bucket`s with `le`, `_sum`, `_count`. */
  get(): Promise<{
    name: string;
    help: string;
    type: string;
    aggregator: string;
    values: { value: number; labels: Record<string, string | number>; metricName: string }[];
  }> {
    const values: { value: number; labels: Record<string, string | number>; metricName: string }[] = [];
    for (const s of this.#series.values()) {
      let acc = 0;
      this.#buckets.forEach((le, i) => {
        acc += s.counts[i] as number;
        values.push({ value: acc, labels: { ...s.labels, le }, metricName: `${this.name}_bucket` });
      });
      values.push({ value: s.count, labels: { ...s.labels, le: '+Inf' }, metricName: `${this.name}_bucket` });
      values.push({ value: s.sum, labels: s.labels, metricName: `${this.name}_sum` });
      values.push({ value: s.count, labels: s.labels, metricName: `${this.name}_count` });
    }
    return Promise.resolve({
      name: this.name,
      help: this.help,
      type: this.type,
      aggregator: this.aggregator,
      values,
    });
  }

  reset(): void {
    this.#series.clear();
  }
}
