/**
 * The per-host relay: one process holds one verified mirror per configuration prefix and serves the
 * other processes of its host over a local socket, as Configerator's per-host proxy does. 150
 * processes then cost the store one watch and one read per verification round instead of 150 of
 * each, and the last hop is a local socket instead of a gRPC stream per process.
 *
 * Freshness carries through: the relay answers a client's list, head read or progress request only
 * after its mirror is proven complete as of a moment *after the request arrived*, and only after it
 * has forwarded every event up to the revision it reports. A proof the client receives is therefore
 * as good as a linearizable read it sent itself (see docs/config.md).
 *
 * Clients that share the relay's clock (same kernel: the `hello` line carries the boot id and the
 * host-monotonic instant) need not ask at all: the relay pushes its latest proof to every watch that
 * asked for pushes, once per period the watch asked for, spread over time (see relay-proofs.ts), with
 * the instant it was taken. Idle processes then wake once per verification interval instead of
 * sending a read and waking for its answer, and the relay parses nothing.
 *
 * A relay on a Unix socket also keeps a **shared table** per prefix (relay-table.ts): a small file
 * next to the socket holding the prefix's content and the relay's latest proof, rewritten in place.
 * Clients on the same kernel read it with one `pread` whenever they are asked for a version, so a new
 * version is held by every process of the host the moment the relay has written it, and proofs reach
 * them without any wake-up at all. The socket still carries every event (which wakes each process
 * once per version, to arm its `switch` timer) and the proofs of clients that cannot read the table.
 *
 * Wire format: newline-delimited JSON (see relay-wire.ts). The agent will later serve the same
 * handles over HTTP.
 */
import { rmSync, unlinkSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { MusterError } from '../errors.js';
import { type Clock, systemClock } from '../clock.js';
import type { KeyValue, Store, WatchEvent } from '../store/index.js';
import { type Duration, toMillis } from '../util/duration.js';
import { hostBootId, hostMonotonicMs } from '../util/host-clock.js';
import { MIN_PROOF_PERIOD_MS, ProofDrip } from './relay-proofs.js';
import { prepareTableDir, tableDirFor, TableWriter } from './relay-table.js';
import { DEFAULT_MAX_STALENESS_MS } from './model.js';
import { type ConfigSource, PrefixMirror } from './mirror.js';
import {
  type ClientMessage,
  encodeEvent,
  encodeKv,
  LineReader,
  type RelayMessage,
  parseRelayAddress,
} from './relay-wire.js';

/** Batches kept per prefix so a client that lists and then watches never misses an event: 1,024. */
export const RELAY_LOG_BATCHES = 1024;
/** Least time between two upstream verification reads: 50 ms, so a host's processes share ≤ 20 reads/s. */
export const RELAY_MIN_ROUND_GAP_MS = 50;

export interface ConfigRelayOptions {
  /** The upstream store. */
  store: ConfigSource & Pick<Store, 'headRevision'>;
  /** Unix socket path (or `host:port`) to listen on. */
  listen: string;
  clock?: Clock;
  /** Bound for the relay's own reads. Default {@link DEFAULT_MAX_STALENESS_MS}. */
  maxStaleness?: Duration;
  /** Verification rounds when no client asks. Default: `maxStaleness / 4`. */
  verifyInterval?: Duration;
  /**
   * Keep a shared table per prefix next to the socket (`<socket>.tables/`). Default: true when
   * listening on a Unix socket; never on TCP.
   */
  tables?: boolean;
  /** Called after each table body write (for benchmarks and logs): prefix, revision, host-monotonic ms. */
  onTableWrite?: (prefix: string, revision: number, hostMono: number) => void;
  /**
   * Called after each change and each proof of a prefix: its key-values (`changed`: they changed) and
   * the monotonic instant of its latest proof. The relay's holder record uses it ({@link relayHolding}).
   */
  onPrefixUpdate?: (
    prefix: string,
    kvs: ReadonlyMap<string, KeyValue>,
    changed: boolean,
    verifiedMono: number,
  ) => void;
}

interface Batch {
  readonly revision: number;
  readonly events: readonly WatchEvent[];
}

/** One relayed prefix: the mirror, the full key-values, and a short log for watches that start late. */
class RelayedPrefix {
  readonly mirror: PrefixMirror;
  readonly kvs = new Map<string, KeyValue>();
  log: Batch[] = [];
  /** Revision of the last list; the log holds every batch after `logBase`. */
  logBase = 0;
  readonly watchers = new Set<ClientWatch>();
  readonly drip: ProofDrip;
  #table: TableWriter | undefined;

  constructor(
    source: ConfigSource,
    readonly prefix: string,
    readonly clock: Clock,
    stalenessMs: number,
    intervalMs: number,
    tableDir: string | undefined,
    readonly onTableWrite: ConfigRelayOptions['onTableWrite'],
    readonly onUpdate: ConfigRelayOptions['onPrefixUpdate'] = undefined,
  ) {
    this.drip = new ProofDrip(clock, {
      verifiedMono: () => this.mirror.fresh.verifiedMono,
      applied: () => this.mirror.fresh.applied,
    });
    if (tableDir !== undefined) {
      try {
        this.#table = new TableWriter(tableDir, prefix);
      } catch {
        this.#table = undefined; // clients find no table and ask for pushed proofs
      }
    }
    this.mirror = new PrefixMirror(
      source,
      prefix,
      {
        onReset: (kvs, revision) => {
          this.kvs.clear();
          for (const kv of kvs) this.kvs.set(kv.key, kv);
          this.#writeTable(revision);
          this.log = [];
          this.logBase = revision;
          for (const w of this.watchers) w.fail('MUSTER_COMPACTED', 'the relay re-listed; list again');
          this.watchers.clear();
          this.drip.clear();
          this.onUpdate?.(prefix, this.kvs, true, this.mirror.fresh.verifiedMono);
        },
        onEvents: (events, revision) => {
          for (const e of events) {
            if (e.type === 'put') this.kvs.set(e.kv.key, e.kv);
            else this.kvs.delete(e.kv.key);
          }
          // The table first: one write, and every process of the host holds the change.
          this.#writeTable(revision);
          this.log.push({ revision, events });
          if (this.log.length > RELAY_LOG_BATCHES) this.logBase = (this.log.shift() as Batch).revision;
          if (this.watchers.size > 0) {
            // Encoded once for every watcher: only the watch id differs.
            const tail = `,"revision":${revision},"events":${JSON.stringify(events.map(encodeEvent))}}\n`;
            for (const w of this.watchers) w.conn.writeRaw(`{"wid":${w.wid}${tail}`);
          }
          this.onUpdate?.(prefix, this.kvs, true, this.mirror.fresh.verifiedMono);
        },
        onError: () => undefined, // the mirror lists again; clients see it through their watches
        onVerified: () => {
          this.#writeProof();
          this.drip.notify();
          this.onUpdate?.(prefix, this.kvs, false, this.mirror.fresh.verifiedMono);
        },
      },
      {
        clock,
        maxStalenessMs: () => stalenessMs,
        // As often as the most demanding watcher asks for proofs (never below the round gap).
        verifyIntervalMs: () =>
          Math.max(RELAY_MIN_ROUND_GAP_MS, Math.min(intervalMs, this.#period() ?? intervalMs)),
        minRoundGapMs: RELAY_MIN_ROUND_GAP_MS,
      },
    );
  }

  /** Whether processes can read this prefix's shared table. */
  get hasTable(): boolean {
    return this.#table !== undefined;
  }

  #writeTable(revision: number): void {
    if (this.#table === undefined) return;
    const mono = hostMonotonicMs();
    try {
      this.#table.writeBody(this.kvs.values(), revision, mono);
    } catch {
      this.#dropTable();
      return;
    }
    try {
      this.onTableWrite?.(this.prefix, revision, mono);
    } catch {
      // an observer's failure is not the relay's
    }
  }

  #writeProof(): void {
    if (this.#table === undefined) return;
    const age = this.clock.monotonic() - this.mirror.fresh.verifiedMono;
    try {
      this.#table.writeProof(this.mirror.fresh.applied, hostMonotonicMs() - age);
    } catch {
      this.#dropTable();
    }
  }

  /** A table that cannot be written is removed: its readers stop getting proofs and read instead. */
  #dropTable(): void {
    const t = this.#table;
    this.#table = undefined;
    if (t === undefined) return;
    try {
      t.close();
    } catch {
      // already unusable
    }
    rmSync(t.path, { force: true });
  }

  /** The shortest proof period any watcher asked for, table readers included (read once a round). */
  #period(): number | undefined {
    let ms: number | undefined;
    for (const w of this.watchers) if (w.every > 0 && (ms === undefined || w.every < ms)) ms = w.every;
    return ms === undefined ? undefined : Math.max(MIN_PROOF_PERIOD_MS, ms);
  }

  add(watch: ClientWatch): void {
    this.watchers.add(watch);
    if (watch.every > 0 && !watch.readsTable) this.drip.add(watch);
  }

  delete(watch: ClientWatch): void {
    this.watchers.delete(watch);
    this.drip.delete(watch);
  }

  async close(): Promise<void> {
    this.drip.close();
    await this.mirror.close();
    this.#dropTable();
  }
}

/**
 * A client's watch on a relayed prefix; `every`: the client wants proofs that often (ms; 0: never),
 * pushed on the socket unless it `readsTable`.
 */
class ClientWatch {
  lastProof = -Infinity;
  constructor(
    readonly conn: Connection,
    readonly wid: number,
    readonly every: number,
    readonly readsTable: boolean,
  ) {}
  writeRaw(line: string): void {
    this.conn.writeRaw(line);
  }
  send(revision: number, events: readonly WatchEvent[]): void {
    this.conn.write({ wid: this.wid, revision, events: events.map(encodeEvent) });
  }
  fail(code: string, message: string): void {
    this.conn.write({ wid: this.wid, error: { code, message } });
  }
}

class Connection {
  readonly watches = new Map<number, { watch: ClientWatch; prefix: RelayedPrefix }>();
  constructor(readonly socket: Socket) {}
  write(m: RelayMessage): void {
    this.writeRaw(`${JSON.stringify(m)}\n`);
  }
  writeRaw(line: string): void {
    if (!this.socket.destroyed) this.socket.write(line);
  }
}

/** A running relay; `close()` is idempotent. */
export class ConfigRelay {
  readonly address: string;
  readonly #server: Server;
  readonly #options: ConfigRelayOptions;
  readonly #clock: Clock;
  readonly #stalenessMs: number;
  readonly #intervalMs: number;
  readonly #tableDir: string | undefined;
  readonly #prefixes = new Map<string, RelayedPrefix>();
  readonly #conns = new Set<Connection>();
  #closed = false;

  private constructor(server: Server, address: string, options: ConfigRelayOptions, settings: RelaySettings) {
    this.#server = server;
    this.address = address;
    this.#options = options;
    this.#clock = settings.clock;
    this.#stalenessMs = settings.stalenessMs;
    this.#intervalMs = settings.intervalMs;
    this.#tableDir = settings.tableDir;
  }

  /** The directory of the shared tables, if the relay keeps them. */
  get tables(): string | undefined {
    return this.#tableDir;
  }

  /** What the relay holds now, for metrics and status (cheap: sizes and one pass over the keys). */
  stats(): RelayStats {
    const now = this.#clock.monotonic();
    return {
      clients: this.#conns.size,
      prefixes: [...this.#prefixes.values()].map((p) => {
        const versions = `${p.prefix}versions/`;
        let n = 0;
        for (const key of p.kvs.keys()) if (key.startsWith(versions)) n++;
        const verified = p.mirror.fresh.verifiedMono;
        return {
          prefix: p.prefix,
          keys: p.kvs.size,
          versions: n,
          revision: p.mirror.fresh.applied,
          proofAgeMs: verified === -Infinity ? undefined : Math.max(0, now - verified),
          watchers: p.watchers.size,
        };
      }),
    };
  }

  /** Listens on `options.listen` and serves until closed. */
  static async start(options: ConfigRelayOptions): Promise<ConfigRelay> {
    const settings = relaySettings(options); // bad input throws before anything is opened
    if (settings.tableDir !== undefined) prepareTableDir(settings.tableDir);
    const server = createServer({ noDelay: true });
    const addr = parseRelayAddress(options.listen);
    const tcp = !('path' in addr);
    const listen = (): Promise<void> =>
      new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        if ('path' in addr) server.listen(addr.path, resolve);
        else server.listen(addr.port, addr.host, resolve);
      });
    try {
      try {
        await listen();
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err;
        // A Unix socket left behind by a relay that died is taken over; a live relay's is not.
        if (tcp || (await answers(options.listen)))
          throw new MusterError(
            'MUSTER_ADDRESS_IN_USE',
            `another relay is listening on ${options.listen}; stop it first or choose another address`,
            { cause: err, details: { listen: options.listen } },
          );
        unlinkSync(options.listen);
        await listen();
      }
    } catch (err) {
      if (err instanceof MusterError) throw err;
      throw new MusterError(
        'MUSTER_INVALID_ARGUMENT',
        `cannot listen on ${options.listen}: ${(err as Error).message}; check that its directory exists and is writable`,
        { cause: err, details: { listen: options.listen } },
      );
    }
    const a = server.address();
    const relay = new ConfigRelay(
      server,
      typeof a === 'string' || a === null ? options.listen : `${a.address}:${a.port}`,
      options,
      settings,
    );
    server.on('connection', (socket) => relay.#accept(socket));
    return relay;
  }

  #prefix(prefix: string): RelayedPrefix {
    let p = this.#prefixes.get(prefix);
    if (p === undefined) {
      p = new RelayedPrefix(
        this.#options.store,
        prefix,
        this.#clock,
        this.#stalenessMs,
        this.#intervalMs,
        this.#tableDir,
        this.#options.onTableWrite,
        this.#options.onPrefixUpdate,
      );
      this.#prefixes.set(prefix, p);
    }
    return p;
  }

  #accept(socket: Socket): void {
    socket.setNoDelay(true);
    const conn = new Connection(socket);
    this.#conns.add(conn);
    conn.write({
      hello: { boot: hostBootId() ?? null, mono: hostMonotonicMs(), tables: this.#tableDir ?? null },
    });
    const reader = new LineReader((m) => void this.#handle(conn, m as ClientMessage));
    socket.on('data', (chunk) => reader.push(chunk));
    socket.on('error', () => socket.destroy());
    socket.on('close', () => {
      this.#conns.delete(conn);
      for (const { watch, prefix } of conn.watches.values()) prefix.delete(watch);
    });
  }

  async #handle(conn: Connection, m: ClientMessage): Promise<void> {
    const arrived = this.#clock.monotonic();
    try {
      switch (m.op) {
        case 'range': {
          const p = this.#prefix(m.prefix);
          await p.mirror.listed;
          await p.mirror.proofAfter(arrived);
          const kvs = [...p.kvs.values()].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
          conn.write({
            id: m.id,
            kvs: kvs.map((kv) => encodeKv(kv, m.keysOnly === true)),
            revision: p.mirror.fresh.applied,
          });
          return;
        }
        case 'head': {
          const head = await this.#options.store.headRevision();
          conn.write({ id: m.id, revision: head });
          return;
        }
        case 'watch': {
          const p = this.#prefix(m.prefix);
          await p.mirror.listed;
          const every = typeof m.every === 'number' && m.every > 0 ? m.every : 0;
          const watch = new ClientWatch(conn, m.wid, every, m.table === true && p.hasTable);
          if (m.from - 1 < p.logBase) {
            watch.fail('MUSTER_COMPACTED', `revision ${m.from} is no longer in the relay's log; list again`);
            return;
          }
          for (const b of p.log) if (b.revision >= m.from) watch.send(b.revision, b.events);
          p.add(watch);
          conn.watches.set(m.wid, { watch, prefix: p });
          return;
        }
        case 'progress': {
          const w = conn.watches.get(m.wid);
          if (w === undefined) return;
          await w.prefix.mirror.proofAfter(arrived);
          if (conn.watches.get(m.wid) === w)
            conn.write({ wid: m.wid, progress: w.prefix.mirror.fresh.applied });
          return;
        }
        case 'unwatch': {
          const w = conn.watches.get(m.wid);
          if (w !== undefined) w.prefix.delete(w.watch);
          conn.watches.delete(m.wid);
          return;
        }
      }
    } catch (err) {
      if ('id' in m) {
        const e = err as { code?: string; message?: string };
        conn.write({
          id: m.id,
          error: { code: e.code ?? 'MUSTER_UNAVAILABLE', message: e.message ?? String(err) },
        });
      }
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const c of this.#conns) c.socket.destroy();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
    await Promise.all([...this.#prefixes.values()].map((p) => p.close()));
    if (this.#tableDir !== undefined) rmSync(this.#tableDir, { recursive: true, force: true });
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/** {@link ConfigRelay.stats}: the relay's clients and, per relayed prefix, what it holds. */
export interface RelayStats {
  readonly clients: number;
  readonly prefixes: readonly {
    readonly prefix: string;
    readonly keys: number;
    /** Keys under `<prefix>versions/`: configuration versions, for a configuration's prefix. */
    readonly versions: number;
    /** Revision up to which the relay has applied every event. */
    readonly revision: number;
    /** Time since the relay last proved it holds everything; `undefined` before its first proof. */
    readonly proofAgeMs: number | undefined;
    readonly watchers: number;
  }[];
}

interface RelaySettings {
  readonly clock: Clock;
  readonly stalenessMs: number;
  readonly intervalMs: number;
  readonly tableDir: string | undefined;
}

/** The relay's settings from its options; throws `MUSTER_INVALID_ARGUMENT` on bad durations. */
function relaySettings(options: ConfigRelayOptions): RelaySettings {
  const stalenessMs = toMillis(options.maxStaleness ?? DEFAULT_MAX_STALENESS_MS, 'maxStaleness');
  const intervalMs =
    options.verifyInterval === undefined
      ? stalenessMs / 4
      : toMillis(options.verifyInterval, 'verifyInterval');
  const unix = 'path' in parseRelayAddress(options.listen);
  return {
    clock: options.clock ?? systemClock,
    stalenessMs,
    intervalMs,
    tableDir: unix && options.tables !== false ? tableDirFor(options.listen) : undefined,
  };
}

/** Whether something accepts connections on Unix socket `path`. */
function answers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(path);
    s.once('connect', () => (s.destroy(), resolve(true)));
    s.once('error', () => resolve(false));
  });
}
