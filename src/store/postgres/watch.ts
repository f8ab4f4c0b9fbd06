/**
 * Watches on PostgreSQL: the events table is the truth, notifications only say "look now".
 *
 * Every writing transaction calls `pg_notify(channel, revision)`; PostgreSQL delivers notifications
 * at commit, to every connection that `LISTEN`s. One {@link Notifier} per store holds one listening
 * connection and wakes its watches; a woken {@link PostgresWatch} reads `history` from its next
 * revision up to the head in one statement (one snapshot, so the head it reads and the events it
 * reads agree) and delivers one batch per revision. Because writers commit in revision order
 * (docs/store.md), a snapshot whose head is `H` holds every event up to `H`: reading `(next, H]`
 * can never skip an event that commits later.
 *
 * A notification can be lost — the listening connection drops, the server restarts, or the
 * notification queue fills up. None of that loses an event: the notifier re-connects with back-off
 * and then wakes every watch, and independently polls the head every `pollIntervalMs`, waking the
 * watches whose next revision it has passed. A lost notification costs latency, never an event.
 */
import pg from 'pg';
import { MusterError } from '../../errors.js';
import { onAbort } from '../../util/abort.js';
import type { Range } from '../keys.js';
import type { KeyValue, Watch, WatchBatch, WatchEvent } from '../types.js';
import { WatchQueue } from '../watch-queue.js';
import { type KvRow, kvOf, rangeCondition } from './codec.js';
import { fromPgError } from './errors.js';

/** Most revisions a watch reads in one statement, so a far-behind watch catches up in bounded steps. */
export const WATCH_CATCH_UP_REVISIONS = 1000;
/** First and largest pause between attempts to re-open the listening connection. */
export const LISTEN_BACKOFF_MIN_MS = 100;
export const LISTEN_BACKOFF_MAX_MS = 2000;

/** What a watch needs from its store. */
export interface WatchHost {
  readonly schema: string;
  /** Runs one read statement on the pool. */
  query<R extends pg.QueryResultRow>(text: string, params: unknown[]): Promise<pg.QueryResult<R>>;
  /** Called once when the watch ends. */
  onEnd(watch: PostgresWatch): void;
}

interface EventRow extends KvRow {
  readonly head: string;
  readonly compact: string;
  readonly revision: string | null;
  readonly deleted: boolean;
  readonly p_key?: Buffer | null;
  readonly p_value?: Buffer | null;
  readonly p_create_revision?: string;
  readonly p_mod_revision?: string;
  readonly p_version?: string;
  readonly p_lease?: string;
  readonly p_deleted?: boolean | null;
}

/** A watch: a catch-up loop over `history`, woken by the notifier, delivering through a {@link WatchQueue}. */
export class PostgresWatch implements Watch {
  readonly #host: WatchHost;
  readonly #prevKv: boolean;
  readonly #queue: WatchQueue;
  readonly #sql: string;
  readonly #params: unknown[];
  /** The next revision to deliver; everything before it was delivered or is outside the range. */
  #next = 0;
  #running = false;
  #dirty = false;
  #progressWanted = false;
  #retry: NodeJS.Timeout | undefined;
  readonly #retryMs: number;
  /** Stops listening to the signal (a no-op until the watch listens). */
  #offAbort: () => void = () => undefined;
  /** Resolves once the start revision is known (writes wait for it: see the store). */
  readonly started: Promise<void>;

  constructor(
    host: WatchHost,
    range: Range,
    options: { fromRevision?: number; prevKv?: boolean; signal?: AbortSignal },
    retryMs: number,
    failWith?: unknown,
  ) {
    this.#host = host;
    this.#prevKv = options.prevKv === true;
    this.#retryMs = retryMs;
    this.#queue = new WatchQueue({ onEnd: () => this.#ended() });
    const s = `"${host.schema}"`;
    const cond = rangeCondition(range, 'h.key', 3);
    const prev = this.#prevKv
      ? `LEFT JOIN LATERAL (
           SELECT p.key AS p_key, p.value AS p_value, p.create_revision AS p_create_revision,
                  p.revision AS p_mod_revision, p.version AS p_version, p.lease AS p_lease, p.deleted AS p_deleted
           FROM ${s}.history p
           WHERE p.key = h.key AND (p.revision, p.seq) < (h.revision, h.seq)
           ORDER BY p.revision DESC, p.seq DESC LIMIT 1) pv ON true`
      : '';
    // One statement, one snapshot: the head, the compaction point and the events up to the head.
    this.#sql = `
      SELECT m.revision AS head, m.compact_revision AS compact, e.*
      FROM ${s}.meta m
      LEFT JOIN LATERAL (
        SELECT h.revision, h.seq, h.key, h.deleted, h.value, h.create_revision,
               h.revision AS mod_revision, h.version, h.lease ${this.#prevKv ? ', pv.*' : ''}
        FROM ${s}.history h ${prev}
        WHERE h.revision >= $1 AND h.revision <= LEAST(m.revision, $2) AND ${cond.sql}
        ORDER BY h.revision, h.seq
      ) e ON true
      WHERE m.id = 1`;
    this.#params = cond.params;
    if (failWith !== undefined) {
      this.#queue.fail(failWith);
      this.started = Promise.resolve();
      return;
    }
    if (options.signal?.aborted) {
      this.#queue.close();
      this.started = Promise.resolve();
      return;
    }
    this.#offAbort = onAbort(options.signal, () => this.close());
    this.started =
      options.fromRevision !== undefined
        ? Promise.resolve().then(() => {
            this.#next = options.fromRevision as number;
            this.wake();
          })
        : this.#startAtHead();
  }

  /** The next revision this watch will deliver (0 until it started). */
  get nextRevision(): number {
    return this.#next;
  }

  get ended(): boolean {
    return this.#queue.ended;
  }

  async #startAtHead(): Promise<void> {
    for (;;) {
      try {
        const res = await this.#host.query<{ revision: string }>(
          `SELECT revision FROM "${this.#host.schema}".meta WHERE id = 1`,
          [],
        );
        this.#next = Number(res.rows[0]?.revision) + 1;
        this.wake();
        return;
      } catch (err) {
        if (this.#queue.ended) return;
        if (err instanceof MusterError && !err.retryable) {
          this.#queue.fail(err);
          return;
        }
        await new Promise((r) => setTimeout(r, this.#retryMs));
        if (this.#queue.ended) return;
      }
    }
  }

  /** Something may have committed at `revision` (or anywhere, when absent): catch up if behind. */
  wake(revision?: number): void {
    if (this.#queue.ended || this.#next === 0) return;
    if (revision !== undefined && revision < this.#next && !this.#progressWanted) return;
    this.#dirty = true;
    if (!this.#running) void this.#loop();
  }

  requestProgress(): void {
    if (this.#queue.ended) return;
    this.#progressWanted = true;
    this.wake();
  }

  close(): void {
    this.#queue.close();
  }

  /** Ends the watch with `error` after the batches already queued. */
  fail(error: unknown): void {
    this.#queue.fail(error);
  }

  #ended(): void {
    clearTimeout(this.#retry);
    this.#offAbort();
    this.#host.onEnd(this);
  }

  async #loop(): Promise<void> {
    this.#running = true;
    try {
      while (this.#dirty && !this.#queue.ended) {
        this.#dirty = false;
        const progress = this.#progressWanted;
        this.#progressWanted = false;
        let caughtUp: boolean;
        try {
          caughtUp = await this.#catchUp(progress);
        } catch (err) {
          if (this.#queue.ended) return;
          const coded = fromPgError(err);
          if (!coded.retryable && coded.code !== 'MUSTER_INTERNAL') {
            this.#queue.fail(coded);
            return;
          }
          // The database is away: try again after a pause (the notifier wakes us sooner if it can).
          if (progress) this.#progressWanted = true;
          clearTimeout(this.#retry);
          this.#retry = setTimeout(() => this.wake(), this.#retryMs);
          return;
        }
        if (!caughtUp) {
          this.#dirty = true;
          if (progress) this.#progressWanted = true;
        }
      }
    } finally {
      this.#running = false;
    }
  }

  /** Reads and delivers `[next, min(head, next + step)]`; true when it reached the head. */
  async #catchUp(progress: boolean): Promise<boolean> {
    const from = this.#next;
    const res = await this.#host.query<EventRow>(this.#sql, [
      from,
      from + WATCH_CATCH_UP_REVISIONS - 1,
      ...this.#params,
    ]);
    if (this.#queue.ended) return true;
    const first = res.rows[0];
    const head = Number(first?.head);
    const compact = Number(first?.compact);
    if (from < compact) {
      this.#queue.fail(
        new MusterError(
          'MUSTER_COMPACTED',
          `revision ${from} has been compacted (history before ${compact} is gone); re-list and watch from the new revision`,
          { details: { revision: from, compactRevision: compact } },
        ),
      );
      return true;
    }
    let batch: WatchEvent[] = [];
    let batchRevision = 0;
    const flush = (): void => {
      if (batch.length > 0) this.#queue.push({ type: 'events', revision: batchRevision, events: batch });
      batch = [];
    };
    for (const row of res.rows) {
      if (row.revision === null) continue;
      const revision = Number(row.revision);
      if (revision !== batchRevision) flush();
      batchRevision = revision;
      batch.push(this.#event(row, revision));
    }
    flush();
    const upTo = Math.min(head, from + WATCH_CATCH_UP_REVISIONS - 1);
    if (upTo + 1 > this.#next) this.#next = upTo + 1;
    const caughtUp = upTo >= head;
    if (progress && caughtUp) this.#queue.push({ type: 'progress', revision: head } satisfies WatchBatch);
    return caughtUp;
  }

  #event(row: EventRow, revision: number): WatchEvent {
    const kv: KeyValue = row.deleted
      ? {
          key: row.key.toString('utf8'),
          value: new Uint8Array(0),
          createRevision: 0,
          modRevision: revision,
          version: 0,
          lease: '0',
        }
      : kvOf(row);
    if (!this.#prevKv || row.p_key === null || row.p_key === undefined || row.p_deleted === true) {
      return { type: row.deleted ? 'delete' : 'put', kv };
    }
    const prev = kvOf({
      key: row.p_key,
      value: row.p_value ?? null,
      create_revision: row.p_create_revision ?? '0',
      mod_revision: row.p_mod_revision ?? '0',
      version: row.p_version ?? '0',
      lease: row.p_lease ?? '0',
    });
    return { type: row.deleted ? 'delete' : 'put', kv, prev };
  }

  [Symbol.asyncIterator](): AsyncIterator<WatchBatch> {
    return this.#queue;
  }
}

/**
 * One listening connection per store, opened with the first watch: wakes every watch on each
 * notification, after every (re-)connection, and whenever its poll of the head finds a revision a
 * watch has not read yet.
 */
export class Notifier {
  readonly #config: pg.ClientConfig;
  readonly #channel: string;
  readonly #pollMs: number;
  readonly #headQuery: () => Promise<number>;
  readonly #watches = new Set<PostgresWatch>();
  #client: pg.Client | undefined;
  #connecting = false;
  #backoffMs = LISTEN_BACKOFF_MIN_MS;
  #reconnect: NodeJS.Timeout | undefined;
  #poll: NodeJS.Timeout | undefined;
  #closed = false;
  /** Backend pid of the listening connection (tests terminate it to lose notifications). */
  listenerPid: number | undefined;

  constructor(config: pg.ClientConfig, channel: string, pollMs: number, headQuery: () => Promise<number>) {
    this.#config = config;
    this.#channel = channel;
    this.#pollMs = pollMs;
    this.#headQuery = headQuery;
  }

  add(watch: PostgresWatch): void {
    if (this.#closed) return;
    this.#watches.add(watch);
    if (this.#client === undefined && !this.#connecting) void this.#connect();
    this.#poll ??= setInterval(() => void this.#pollHead(), this.#pollMs);
  }

  delete(watch: PostgresWatch): void {
    this.#watches.delete(watch);
  }

  /** Resolves once the listening connection is up (tests). */
  async listening(timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.listenerPid === undefined) {
      if (Date.now() > deadline || this.#closed)
        throw new MusterError('MUSTER_TIMEOUT', 'the listening connection did not come up');
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#reconnect);
    clearInterval(this.#poll);
    const client = this.#client;
    this.#client = undefined;
    this.listenerPid = undefined;
    if (client !== undefined) void client.end().catch(() => undefined);
  }

  #wakeAll(revision?: number): void {
    for (const w of this.#watches) w.wake(revision);
  }

  async #pollHead(): Promise<void> {
    if (this.#watches.size === 0) return;
    try {
      const head = await this.#headQuery();
      this.#wakeAll(head);
    } catch {
      // the database is away; the next tick tries again
    }
  }

  async #connect(): Promise<void> {
    this.#connecting = true;
    const client = new pg.Client({ ...this.#config, application_name: 'muster-listen' });
    const lost = (): void => {
      if (this.#client !== client) return;
      this.#client = undefined;
      this.listenerPid = undefined;
      void client.end().catch(() => undefined);
      this.#schedule();
    };
    client.on('error', lost);
    client.on('end', lost);
    client.on('notification', (msg) => {
      const revision = Number(msg.payload);
      this.#wakeAll(Number.isSafeInteger(revision) ? revision : undefined);
    });
    try {
      await client.connect();
      await client.query(`LISTEN ${this.#channel}`);
      const pid = await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
      if (this.#closed) {
        await client.end().catch(() => undefined);
        return;
      }
      this.#client = client;
      this.listenerPid = pid.rows[0]?.pid;
      this.#backoffMs = LISTEN_BACKOFF_MIN_MS;
      // Whatever committed while we were not listening: every watch catches up now.
      this.#wakeAll();
    } catch {
      await client.end().catch(() => undefined);
      this.#schedule();
    } finally {
      this.#connecting = false;
    }
  }

  #schedule(): void {
    if (this.#closed || this.#reconnect !== undefined) return;
    const delay = this.#backoffMs * (0.5 + Math.random() / 2);
    this.#backoffMs = Math.min(this.#backoffMs * 2, LISTEN_BACKOFF_MAX_MS);
    this.#reconnect = setTimeout(() => {
      this.#reconnect = undefined;
      if (!this.#closed && this.#client === undefined && !this.#connecting) void this.#connect();
    }, delay);
    // the poll still wakes watches meanwhile
    this.#wakeAll();
  }
}
