/**
 * A counter for hot paths: per-event increments as plain numbers, added to a prom-client counter only
 * when it is scraped. prom-client hashes the label set on every `inc()`/`observe()`, even through a
 * cached `labels()` child: measured A/B in one process, a counter increment plus a histogram
 * observation cost ~2.9 µs per proxied request against ~0.03 µs for a plain array increment — about
 * 6 % of a proxy worker's CPU at 20k requests/s; on the bus, a labelled `inc()` per published and per
 * delivered message was ~5 % of a fan-out's CPU. Each label set is looked up once (a Map of the
 * joined label values); prom-client reads the totals when the counter's `collect()` flushes. Used by
 * the proxy and the bus (next to the daemon runtime's `FastHistogram`).
 */
import type { Counter } from 'prom-client';

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
