/**
 * The dashboard's model of the fleet, kept current by watched views only (no polling): the service
 * names come from a watched `services/` prefix, each service's state from its shared partitions view
 * (`openServiceView`), the proxies' held queues from a watched `status/` prefix, configurations and
 * their holders from watched `config/` and `config-holders/` prefixes. Every change marks the model
 * dirty; subscribers get one coalesced snapshot per turn.
 * After a re-list (a compaction, a broken stream) the views replace their contents, so the next
 * snapshot is whole again: a page that receives only snapshots can never drift.
 */
import { type Clock, systemClock, type TimerHandle } from '../clock.js';
import { decodePolicy, decodeVersion, type ConfigPolicy, type ConfigVersion } from '../config/internal.js';
import { parseHolder, type HolderRecord } from '../config/index.js';
import { serviceKeys, statusPrefix } from '../membership/index.js';
import { openServiceView, type ServiceViewHandle } from '../partitions/index.js';
import { parseProxyRecord, type ProxyRecord } from '../proxy/index.js';
import { watchPrefix, type WatchedPrefix } from '../store/index.js';
import type { KeyValue, Store } from '../store/index.js';

/** Snapshots are coalesced over this window: 25 ms, well under the one second a hand-off must show in. */
export const SNAPSHOT_COALESCE_MS = 25;

export interface ServiceSnapshot {
  readonly name: string;
  readonly partitions: readonly string[];
  readonly owners: Record<
    string,
    { instance: string; token: number; since: number | string; moving: boolean }
  >;
  readonly instances: readonly {
    id: string;
    address: string | null;
    state: string;
    health: string;
    weight: number;
    restarts: number | null;
    startedAt: string;
  }[];
  readonly pins: Record<string, string>;
  readonly routes: Record<string, string>;
  /** The proxies in front of the service and what each holds (`status/<s>/proxies/<id>`). */
  readonly proxies: readonly ProxyRecord[];
  /** Held requests per destination, summed over the proxies. */
  readonly held: Record<string, number>;
}

export interface ConfigSnapshotView {
  readonly name: string;
  readonly policy: ConfigPolicy | undefined;
  readonly versions: readonly (ConfigVersion & { holders: string[]; missing: string[] })[];
  readonly instances: readonly HolderRecord[];
}

export interface FleetSnapshot {
  /** Server wall clock when the snapshot was made (the page uses it to correct its countdowns). */
  readonly now: number;
  readonly seq: number;
  readonly services: readonly ServiceSnapshot[];
  readonly configs: readonly ConfigSnapshotView[];
}

interface Watched {
  readonly kvs: Map<string, KeyValue>;
  readonly view: WatchedPrefix;
}

export class FleetModel {
  readonly #store: Store;
  readonly #root: string;
  readonly #clock: Clock;
  readonly #services = new Map<string, { handle: ServiceViewHandle; off: () => void }>();
  readonly #listeners = new Set<(s: FleetSnapshot) => void>();
  readonly #names: Watched;
  readonly #status: Watched;
  readonly #config: Watched;
  readonly #holders: Watched;
  #timer: TimerHandle | undefined;
  #seq = 0;
  #closed = false;

  constructor(store: Store, options: { root?: string; clock?: Clock } = {}) {
    this.#store = store;
    this.#root = options.root ?? '/muster/';
    this.#clock = options.clock ?? systemClock;
    this.#names = this.#watch(`${this.#root}services/`, () => this.#syncServices());
    this.#status = this.#watch(statusPrefix(this.#root));
    this.#config = this.#watch(`${this.#root}config/`);
    this.#holders = this.#watch(`${this.#root}config-holders/`);
  }

  #watch(prefix: string, after?: () => void): Watched {
    const kvs = new Map<string, KeyValue>();
    const view = watchPrefix(this.#store, prefix, {
      clock: this.#clock,
      onChange: (change) => {
        if (change.type === 'reset') {
          kvs.clear();
          for (const kv of change.kvs) kvs.set(kv.key, kv);
        } else if (change.type === 'events') {
          for (const e of change.events) {
            if (e.type === 'delete') kvs.delete(e.kv.key);
            else kvs.set(e.kv.key, e.kv);
          }
        } else return;
        after?.();
        this.#dirty();
      },
    });
    return { kvs, view };
  }

  /** Resolves once every watched prefix holds its first listing. */
  async ready(): Promise<void> {
    await Promise.all([this.#names, this.#status, this.#config, this.#holders].map((w) => w.view.ready()));
    this.#syncServices();
    await Promise.all([...this.#services.values()].map((s) => s.handle.ready()));
  }

  #syncServices(): void {
    if (this.#closed) return;
    const base = `${this.#root}services/`;
    const names = new Set<string>();
    for (const key of this.#names.kvs.keys()) {
      const name = key.slice(base.length).split('/')[0];
      if (name !== undefined && name !== '') names.add(name);
    }
    for (const name of names) {
      if (this.#services.has(name)) continue;
      const handle = openServiceView(this.#store, name, { root: this.#root, clock: this.#clock });
      const off = handle.subscribe(() => this.#dirty());
      handle.ready().then(
        () => this.#dirty(),
        () => undefined,
      );
      this.#services.set(name, { handle, off });
    }
    for (const [name, s] of this.#services) {
      if (names.has(name)) continue;
      s.off();
      s.handle.close();
      this.#services.delete(name);
    }
  }

  /** Calls `listener` with a coalesced snapshot after changes; returns an unsubscribe function. */
  subscribe(listener: (s: FleetSnapshot) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  #dirty(): void {
    if (this.#timer !== undefined || this.#closed) return;
    this.#timer = this.#clock.setTimeout(() => {
      this.#timer = undefined;
      const snap = this.snapshot();
      for (const l of this.#listeners) {
        try {
          l(snap);
        } catch {
          // a failing listener (a closed response) never breaks the others
        }
      }
    }, SNAPSHOT_COALESCE_MS);
  }

  snapshot(): FleetSnapshot {
    const services: ServiceSnapshot[] = [];
    for (const [name, { handle }] of [...this.#services].sort(([a], [b]) => a.localeCompare(b))) {
      const spec = handle.spec;
      const partitions =
        spec === undefined
          ? [...handle.owners.keys()].sort()
          : typeof spec.partitions === 'number'
            ? Array.from({ length: spec.partitions }, (_, i) => String(i))
            : [...spec.partitions];
      const owners: ServiceSnapshot['owners'] = {};
      for (const [p, o] of handle.owners)
        owners[p] = { instance: o.instance, token: o.token, since: o.since, moving: o.moving === true };
      services.push({
        name,
        partitions,
        owners,
        instances: [...handle.instances.values()]
          .map((i) => ({
            id: i.id,
            address: i.address,
            state: i.state,
            health: i.health,
            weight: i.weight,
            restarts: restartsOf(i),
            startedAt: i.startedAt,
          }))
          .sort((a, b) => a.id.localeCompare(b.id)),
        pins: Object.fromEntries(handle.pins),
        routes: Object.fromEntries([...handle.routes].map(([k, r]) => [k, r.instance])),
        ...this.#proxies(name),
      });
    }
    return { now: this.#clock.now(), seq: ++this.#seq, services, configs: this.#configs() };
  }

  /** The proxy records of `service`, from the watched `status/` prefix. */
  #proxies(service: string): { proxies: ProxyRecord[]; held: Record<string, number> } {
    const prefix = serviceKeys(this.#root, service).proxies;
    const proxies: ProxyRecord[] = [];
    const held: Record<string, number> = {};
    for (const [key, kv] of this.#status.kvs) {
      if (!key.startsWith(prefix)) continue;
      const r = parseProxyRecord(kv.value);
      if (r === undefined) continue;
      proxies.push(r);
      for (const [d, n] of Object.entries(r.held)) held[d] = (held[d] ?? 0) + n;
    }
    return { proxies: proxies.sort((a, b) => a.id.localeCompare(b.id)), held };
  }

  #configs(): ConfigSnapshotView[] {
    const base = `${this.#root}config/`;
    const byName = new Map<string, { policy?: ConfigPolicy; versions: ConfigVersion[] }>();
    for (const kv of this.#config.kvs.values()) {
      const [name, kind] = kv.key.slice(base.length).split('/');
      if (name === undefined || name === '') continue;
      const entry = byName.get(name) ?? { versions: [] };
      byName.set(name, entry);
      try {
        if (kind === 'policy') entry.policy = decodePolicy(kv.value, kv.key);
        else if (kind === 'versions') entry.versions.push(decodeVersion(kv.value, kv.key));
      } catch {
        // a malformed record is shown as absent; the handles report it
      }
    }
    const hbase = `${this.#root}config-holders/`;
    const holders = new Map<string, HolderRecord[]>();
    for (const kv of this.#holders.kvs.values()) {
      const name = kv.key.slice(hbase.length).split('/')[0] ?? '';
      const r = parseHolder(kv);
      if (r === undefined) continue;
      holders.set(name, [...(holders.get(name) ?? []), r]);
    }
    return [...byName]
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([name, { policy, versions }]) => {
        const hs = (holders.get(name) ?? []).sort((a, b) => a.instance.localeCompare(b.instance));
        return {
          name,
          policy,
          versions: versions
            .sort((a, b) => a.version - b.version)
            .map((v) => ({
              ...v,
              holders: hs.filter((h) => h.version >= v.version).map((h) => h.instance),
              missing: hs.filter((h) => h.version < v.version).map((h) => h.instance),
            })),
          instances: hs,
        };
      });
  }

  /** Re-lists every watched prefix now (what a compaction does); the next snapshot is whole. */
  get relists(): number {
    return this.#names.view.relists + this.#config.view.relists + this.#holders.view.relists;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    for (const w of [this.#names, this.#status, this.#config, this.#holders]) w.view.close();
    for (const s of this.#services.values()) {
      s.off();
      s.handle.close();
    }
    this.#services.clear();
    this.#listeners.clear();
  }
}

/** Restarts as the agent publishes them in the instance record's tags (`restarts=N`); null when absent. */
function restartsOf(i: { tags: readonly string[] }): number | null {
  for (const t of i.tags) {
    const m = /^restarts=(\d+)$/.exec(t);
    if (m !== null) return Number(m[1]);
  }
  return null;
}
