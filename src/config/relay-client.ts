/**
 * The process side of the per-host relay: a {@link ConfigSource} over the relay's local socket, so
 * `openConfig(await RelayClient.connect(path), name)` behaves exactly like a handle on the store,
 * with the same staleness rule. Connection loss fails pending calls and watches with
 * `MUSTER_UNAVAILABLE`; the handle lists again, which reconnects.
 *
 * The relay's `hello` tells whether it shares this process's clock (same boot id, and its
 * host-monotonic instant is neither ahead of ours nor more than {@link HELLO_MAX_TRANSIT_MS} behind).
 * Only then are its proofs passed on to the mirror; otherwise the mirror verifies by reads.
 *
 * When the relay keeps a shared table for a watched prefix (relay-table.ts) and shares the clock, the
 * watch reads it: {@link RelayWatch.poll} returns what the table holds beyond what the mirror has
 * applied (the prefix's full content, and the relay's latest proof), and the relay pushes no proofs on
 * the socket. The socket still carries every event; the mirror drops those the table delivered first.
 */
import { connect, type Socket } from 'node:net';
import { abortedError, MusterError } from '../errors.js';
import type { KeySelector, RangeOptions, RangeResult } from '../store/index.js';
import { WatchQueue } from '../store/internal.js';
import { abortable, onAbort } from '../util/abort.js';
import { type Duration, toMillis } from '../util/duration.js';
import { hostBootId, hostMonotonicMs } from '../util/host-clock.js';
import type { ConfigSource, MirrorBatch, MirrorWatch, MirrorWatchOptions } from './mirror.js';
import { type TableHeader, TableReader, tablePath } from './relay-table.js';
import {
  type ClientMessage,
  decodeEvent,
  decodeKv,
  LineReader,
  parseRelayAddress,
  type RelayMessage,
} from './relay-wire.js';

/** A `hello` older than this on arrival means the relay's clock is not ours: 1 s. */
export const HELLO_MAX_TRANSIT_MS = 1000;

/**
 * Least time between two reads of a shared table by one watch: 1 ms. A process asking for its
 * configuration in a tight loop pays one `pread` per millisecond, and holds a new version at most
 * this long after the relay wrote it.
 */
export const TABLE_POLL_GAP_MS = 1;

/**
 * A relay that has not sent its hello this long after the connection opened is given up on: 30 s.
 * Generous on purpose: while 150 processes start, a relay may not run for seconds; a peer that never
 * says hello (a stopped relay, or not a relay) still cannot hang a connect or a close forever.
 */
export const DEFAULT_HELLO_TIMEOUT_MS = 30_000;

export interface RelayClientOptions {
  /** Give up on a relay that sends no hello within this long. Default {@link DEFAULT_HELLO_TIMEOUT_MS}. */
  helloTimeout?: Duration;
}

type Pending = { resolve: (m: RelayMessage) => void; reject: (e: Error) => void };

/** A watch through the relay: the relay's batches, queued for one consumer, and its shared table. */
class RelayWatch implements MirrorWatch {
  readonly #queue = new WatchQueue<MirrorBatch>();
  #table: TableReader | undefined;
  #polledMono = -Infinity;
  #provenMono = -Infinity;
  constructor(
    readonly onRequest: () => void,
    readonly onClose: () => void,
  ) {}

  /** Reads proofs and content from `table` from now on (the relay pushes no proofs to this watch). */
  useTable(table: TableReader): void {
    this.#table = table;
  }

  /**
   * What the shared table holds beyond revision `applied` (the mirror's): the prefix's content if the
   * table's is newer, then the relay's proof if it is new and covered by what the mirror will hold.
   * At most one read per {@link TABLE_POLL_GAP_MS}; nothing when the table is torn or gone.
   */
  poll(applied: number): MirrorBatch[] {
    const table = this.#table;
    if (table === undefined || this.#queue.ended) return [];
    const now = performance.now();
    if (now - this.#polledMono < TABLE_POLL_GAP_MS) return [];
    this.#polledMono = now;
    let header: TableHeader | undefined = table.header();
    if (header === undefined) return [];
    const out: MirrorBatch[] = [];
    let held = applied;
    if (header.bodyRevision > applied) {
      const body = table.body();
      if (body !== undefined) {
        header = body; // read with the body: at least as new
        if (body.bodyRevision > applied) {
          out.push({ type: 'state', revision: body.bodyRevision, kvs: body.kvs });
          held = body.bodyRevision;
        }
      }
    }
    if (header.provenMono > this.#provenMono && header.proofRevision <= held) {
      this.#provenMono = header.provenMono;
      out.push({ type: 'proof', revision: header.proofRevision, provenAtHostMs: header.provenMono });
    }
    return out;
  }

  push(batch: MirrorBatch): void {
    this.#queue.push(batch);
  }

  fail(err: unknown): void {
    this.#closeTable();
    this.#queue.fail(err instanceof Error ? err : new Error(String(err)));
  }

  #closeTable(): void {
    this.#table?.close();
    this.#table = undefined;
  }

  requestProgress(): void {
    if (!this.#queue.ended) this.onRequest();
  }

  get ended(): boolean {
    return this.#queue.ended;
  }

  close(): void {
    if (this.#queue.ended) return;
    this.#closeTable();
    this.onClose();
    this.#queue.close();
  }

  [Symbol.asyncIterator](): AsyncIterator<MirrorBatch> {
    return {
      next: () => this.#queue.next(),
      return: async (): Promise<IteratorResult<MirrorBatch>> => {
        this.close();
        return { value: undefined, done: true };
      },
    };
  }
}

/** A connection to a {@link ConfigRelay}. */
export class RelayClient implements ConfigSource {
  readonly address: string;
  readonly relayed = true;
  #socket: Socket | undefined;
  #connecting: Promise<Socket> | undefined;
  #nextId = 1;
  readonly #pending = new Map<number, Pending>();
  readonly #watches = new Map<number, RelayWatch>();
  /** The current connection's relay shares our clock (from its `hello`). */
  #sameClock = false;
  /** The current connection's relay keeps shared tables here (from its `hello`). */
  #tables: string | undefined;
  #helloed: (() => void) | undefined;
  /** The socket of a connection still waiting for its hello (closed by {@link close}). */
  #pendingSocket: Socket | undefined;
  #closed = false;

  readonly #helloTimeoutMs: number;

  private constructor(address: string, options: RelayClientOptions) {
    this.address = address;
    this.#helloTimeoutMs = toMillis(options.helloTimeout ?? DEFAULT_HELLO_TIMEOUT_MS, 'helloTimeout');
  }

  /** Connects to the relay at a Unix socket path or `host:port`; `MUSTER_UNAVAILABLE` if it is not there. */
  static async connect(address: string, options: RelayClientOptions = {}): Promise<RelayClient> {
    const c = new RelayClient(address, options);
    await c.#ensure();
    return c;
  }

  #ensure(): Promise<Socket> {
    if (this.#closed) return Promise.reject(new MusterError('MUSTER_CLOSED', 'the relay client was closed'));
    if (this.#socket !== undefined && !this.#socket.destroyed) return Promise.resolve(this.#socket);
    this.#connecting ??= new Promise<Socket>((resolve, reject) => {
      const a = parseRelayAddress(this.address);
      const socket = 'path' in a ? connect(a.path) : connect(a.port, a.host);
      socket.setNoDelay(true);
      this.#pendingSocket = socket;
      this.#sameClock = false;
      this.#tables = undefined;
      // A relay that accepts but never says hello (stopped, or not a relay) is not a connection.
      let settled = false;
      // After a long stall, timers run before pending reads: look at the socket once more first.
      const helloTimer = setTimeout(() => {
        setImmediate(() => {
          if (settled) return;
          socket.destroy(
            new MusterError(
              'MUSTER_UNAVAILABLE',
              `the relay at ${this.address} sent no hello within ${this.#helloTimeoutMs} ms`,
            ),
          );
        });
      }, this.#helloTimeoutMs);
      const reader = new LineReader((msg) => this.#onMessage(msg as RelayMessage));
      socket.on('data', (chunk) => reader.push(chunk));
      // Connected once the relay's hello has arrived: what it says decides how watches verify.
      this.#helloed = () => {
        settled = true;
        clearTimeout(helloTimer);
        this.#helloed = undefined;
        this.#pendingSocket = undefined;
        this.#socket = socket;
        this.#connecting = undefined;
        resolve(socket);
      };
      const fail = (err: MusterError): void => {
        if (settled) return;
        settled = true;
        clearTimeout(helloTimer);
        this.#connecting = undefined;
        this.#helloed = undefined;
        if (this.#pendingSocket === socket) this.#pendingSocket = undefined;
        reject(err);
      };
      socket.on('error', (err) =>
        fail(
          err instanceof MusterError
            ? err
            : new MusterError('MUSTER_UNAVAILABLE', `cannot reach the relay at ${this.address}`, {
                cause: err,
              }),
        ),
      );
      socket.on('close', () => {
        fail(new MusterError('MUSTER_UNAVAILABLE', `the relay at ${this.address} closed before its hello`));
        this.#lost(socket);
      });
    });
    return this.#connecting;
  }

  #lost(socket: Socket): void {
    if (this.#socket === socket) this.#socket = undefined;
    const err = new MusterError('MUSTER_UNAVAILABLE', `lost the connection to the relay at ${this.address}`);
    for (const p of this.#pending.values()) p.reject(err);
    this.#pending.clear();
    for (const w of this.#watches.values()) w.fail(err);
    this.#watches.clear();
  }

  #onMessage(m: RelayMessage): void {
    if ('hello' in m) {
      const transit = hostMonotonicMs() - m.hello.mono;
      this.#sameClock =
        m.hello.boot !== null &&
        m.hello.boot === hostBootId() &&
        transit >= 0 &&
        transit <= HELLO_MAX_TRANSIT_MS;
      this.#tables = this.#sameClock ? (m.hello.tables ?? undefined) : undefined;
      this.#helloed?.();
      return;
    }
    if ('id' in m) {
      const p = this.#pending.get(m.id);
      this.#pending.delete(m.id);
      if (p === undefined) return;
      if ('error' in m) p.reject(new MusterError(m.error.code as 'MUSTER_UNAVAILABLE', m.error.message));
      else p.resolve(m);
      return;
    }
    const w = this.#watches.get(m.wid);
    if (w === undefined) return;
    if ('error' in m) {
      this.#watches.delete(m.wid);
      w.fail(new MusterError(m.error.code as 'MUSTER_COMPACTED', m.error.message));
    } else if ('progress' in m) w.push({ type: 'progress', revision: m.progress });
    else if ('proof' in m) {
      if (this.#sameClock) w.push({ type: 'proof', revision: m.proof, provenAtHostMs: m.mono - m.age });
    } else w.push({ type: 'events', revision: m.revision, events: m.events.map(decodeEvent) });
  }

  #send(m: ClientMessage): void {
    if (this.#socket !== undefined && !this.#socket.destroyed) this.#socket.write(`${JSON.stringify(m)}\n`);
  }

  async #call(make: (id: number) => ClientMessage, signal?: AbortSignal): Promise<RelayMessage> {
    await abortable(this.#ensure(), signal);
    const id = this.#nextId++;
    return new Promise<RelayMessage>((resolve, reject) => {
      let settled = false;
      const done = onAbort(signal, () => {
        settled = true;
        this.#pending.delete(id);
        reject(abortedError(signal as AbortSignal));
      });
      if (settled) return;
      this.#pending.set(id, {
        resolve: (m) => (done(), resolve(m)),
        reject: (e) => (done(), reject(e)),
      });
      this.#send(make(id));
    });
  }

  async range(selector: string | KeySelector, options: RangeOptions = {}): Promise<RangeResult> {
    if (typeof selector !== 'string')
      throw new MusterError('MUSTER_INVALID_ARGUMENT', 'the relay serves prefixes only');
    const m = await this.#call(
      (id) => ({ op: 'range', id, prefix: selector, keysOnly: options.keysOnly === true }),
      options.signal,
    );
    const kvs = 'kvs' in m ? m.kvs.map(decodeKv) : [];
    const revision = 'revision' in m ? m.revision : 0;
    return { kvs, revision, count: kvs.length, more: false };
  }

  async headRevision(options: { signal?: AbortSignal } = {}): Promise<number> {
    const m = await this.#call((id) => ({ op: 'head', id }), options.signal);
    return 'revision' in m ? m.revision : 0;
  }

  /** Set by the relay's `hello`: whether pushed proofs are passed on (exposed for tests). */
  get sharesClock(): boolean {
    return this.#sameClock;
  }

  /** Whether the relay offers shared tables this process can use (exposed for tests). */
  get tables(): string | undefined {
    return this.#tables;
  }

  watch(selector: string | KeySelector, options: MirrorWatchOptions = {}): MirrorWatch {
    if (typeof selector !== 'string')
      throw new MusterError('MUSTER_INVALID_ARGUMENT', 'the relay serves prefixes only');
    const wid = this.#nextId++;
    const w = new RelayWatch(
      () => this.#send({ op: 'progress', wid }),
      () => {
        this.#watches.delete(wid);
        this.#send({ op: 'unwatch', wid });
      },
    );
    this.#watches.set(wid, w);
    onAbort(options.signal, () => w.close());
    this.#ensure().then(
      () => {
        if (w.ended) return; // closed while connecting
        const table =
          this.#tables === undefined ? undefined : TableReader.open(tablePath(this.#tables, selector));
        if (table !== undefined) w.useTable(table);
        this.#send({
          op: 'watch',
          wid,
          prefix: selector,
          from: options.fromRevision ?? 1,
          ...(options.proofEveryMs === undefined ? {} : { every: options.proofEveryMs }),
          ...(table === undefined ? {} : { table: true }),
        });
      },
      (err: unknown) => {
        w.fail(err);
      },
    );
    return w;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#socket?.destroy();
    this.#pendingSocket?.destroy();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
