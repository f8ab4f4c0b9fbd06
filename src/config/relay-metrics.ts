/**
 * The relay's Prometheus metrics, read from {@link ConfigRelay.stats} when scraped (nothing is
 * counted on the relay's paths).
 */
import { Gauge, type Registry } from 'prom-client';
import type { ConfigRelay } from './relay.js';

/** Registers `muster_relay_*` gauges for `relay` in `registry`. */
export function registerRelayMetrics(registry: Registry, relay: Pick<ConfigRelay, 'stats'>): void {
  const registers = [registry];
  // One read of the stats per scrape, shared by the gauges (each collect runs in the same scrape).
  let cached: { at: number; stats: ReturnType<ConfigRelay['stats']> } | undefined;
  const stats = (): ReturnType<ConfigRelay['stats']> => {
    const now = Date.now();
    if (cached === undefined || now - cached.at > 100) cached = { at: now, stats: relay.stats() };
    return cached.stats;
  };
  new Gauge({
    name: 'muster_relay_clients',
    help: 'Processes connected to the relay socket.',
    registers,
    collect() {
      this.set(stats().clients);
    },
  });
  new Gauge({
    name: 'muster_relay_configs',
    help: 'Prefixes (configurations) the relay watches for its clients.',
    registers,
    collect() {
      this.set(stats().prefixes.length);
    },
  });
  new Gauge({
    name: 'muster_relay_versions',
    help: 'Configuration versions the relay holds, by prefix.',
    labelNames: ['prefix'],
    registers,
    collect() {
      this.reset();
      for (const p of stats().prefixes) this.set({ prefix: p.prefix }, p.versions);
    },
  });
  new Gauge({
    name: 'muster_relay_watchers',
    help: 'Client watches on each prefix.',
    labelNames: ['prefix'],
    registers,
    collect() {
      this.reset();
      for (const p of stats().prefixes) this.set({ prefix: p.prefix }, p.watchers);
    },
  });
  new Gauge({
    name: 'muster_relay_revision',
    help: 'Revision up to which the relay has applied every event, by prefix.',
    labelNames: ['prefix'],
    registers,
    collect() {
      this.reset();
      for (const p of stats().prefixes) this.set({ prefix: p.prefix }, p.revision);
    },
  });
  new Gauge({
    name: 'muster_relay_proof_age_seconds',
    help: 'Seconds since the relay last proved it holds every version of the prefix (its staleness); absent before the first proof.',
    labelNames: ['prefix'],
    registers,
    collect() {
      this.reset();
      for (const p of stats().prefixes) {
        if (p.proofAgeMs !== undefined) this.set({ prefix: p.prefix }, p.proofAgeMs / 1000);
      }
    },
  });
}
