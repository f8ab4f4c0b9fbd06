/**
 * The PostgreSQL engine of the Store port, on node-postgres (`pg`).
 *
 * - Writes: one database transaction each, serialised on the `meta` row (see `write.ts`): the
 *   revision is gap-free and in commit order.
 * - Reads at the head: one statement reading `kv` and `meta` in one snapshot. Reads at a past
 *   revision: the same from `history`.
 * - Watches: `history` read from the watch's next revision, woken by LISTEN/NOTIFY and a poll
 *   (see `watch.ts`).
 * - Leases: expiry by the database clock; every client reaps expired leases (see `leases.ts`).
 *
 * Every error from the driver goes through {@link fromPgError}. Nothing is retried inside the engine:
 * a write whose connection drops at commit may have been applied, which only the caller can judge.
 * docs/store.md ("PostgreSQL engine") carries the argument for each guarantee.
 */
import pg from 'pg';
import { abortedError, type ErrorDetails, invalidArgument, MusterError } from '../../errors.js';
import { abortable } from '../../util/abort.js';
import { checkKey, checkLeaseId, checkRevision, checkTtl, type Range, toBytes, toRange } from '../keys.js';
import { checkLimit, prepareOps } from '../memory/txn-ops.js';
import { evaluateCompare, validateCompares } from '../txn-rules.js';
import {
  type Compare,
  type DeleteOptions,
  type DeleteResult,
  type KeySelector,
  type KeyValue,
  type LeaseGrant,
  type LeaseId,
  type LeaseInfo,
  NO_LEASE,
  type PutOptions,
  type PutResult,
  type RangeOptions,
  type RangeResult,
  type ReadOptions,
  type Store,
  type TxnOp,
  type TxnResult,
  type ValueInput,
  type Watch,
  type WatchOptions,
} from '../types.js';
import { CancelScope, type Db, poolDb, terminateBackend } from './cancel.js';
import { keyBytes, kvOf, prepared, valueBuffer } from './codec.js';
import { fromPgError } from './errors.js';
import {
  checkReadable,
  compactedError,
  futureRevision,
  leaseNotFound,
  newLeaseId,
  type PutRow,
} from './results.js';
import { LeaseReaper } from './leases.js';
import { ident, migrate } from './schema.js';
import { type PostgresStoreOptions, resolvePostgresOptions, type ResolvedPostgresOptions } from './url.js';
import { Notifier, PostgresWatch } from './watch.js';
import { beginSql, prefetchedFrom, rangeAtHead, rangeAtRevision, type RangeRead, WriteTxn } from './write.js';

/** 1 s: the client gives up on a statement this long after the server's `statement_timeout` would have. */
export const QUERY_TIMEOUT_MARGIN_MS = 1000;

/** Connections for lease renewals, besides `poolMax` (a renewal stuck on a dead link leaves one). */
export const LEASE_POOL_MAX = 2;

/**
 * A node-postgres client that never crashes its process with an unheard 'error' event: a connection
 * that breaks (a server restart sends `57P01` to every session) reports it on the client, and
 * node-postgres listens only at some moments of a pooled client's life. The statement that was
 * running, or the next one, fails and is translated as usual; the pool drops the broken client.
 */
class PooledClient extends pg.Client {
  constructor(config?: pg.ClientConfig) {
    super(config);
    this.on('error', () => undefined);
  }
}

function newPool(config: pg.ClientConfig, max: number, applicationName: string): pg.Pool {
  const pool = new pg.Pool({
    ...config,
    Client: PooledClient,
    max,
    idleTimeoutMillis: 30_000,
    application_name: applicationName,
  });
  // An idle connection that breaks (server restart) is dropped by the pool, which then emits
  // 'error' on itself: without a listener that would crash the process.
  pool.on('error', () => undefined);
  return pool;
}

/**
 * Opens the PostgreSQL engine for `url`: connects, checks the server version and applies the
 * schema's migrations. Throws `MUSTER_UNSUPPORTED_URL` / `MUSTER_INVALID_ARGUMENT` for a bad URL,
 * `MUSTER_UNSUPPORTED_SERVER` for PostgreSQL older than 13 or a schema from a newer muster,
 * `MUSTER_UNAVAILABLE` when the server cannot be reached and `MUSTER_PERMISSION_DENIED` for refused
 * credentials.
 */
export async function openPostgresStore(
  url: string,
  options: PostgresStoreOptions = {},
): Promise<PostgresStore> {
  const store = new PostgresStore(resolvePostgresOptions(url, options));
  try {
    await store.migrate();
  } catch (err) {
    await store.close();
    throw fromPgError(err);
  }
  store.startReaper();
  return store;
}

/** The PostgreSQL engine. Open it with {@link openPostgresStore} or `openStore('postgres://…')`. */
export class PostgresStore implements Store {
  readonly url: string;
  readonly #opts: ResolvedPostgresOptions;
  readonly #pool: pg.Pool;
  readonly #leasePool: pg.Pool;
  /** The pool as a {@link Db}: where calls without a signal run. */
  readonly #db: Db;
  readonly #leaseDb: Db;
  /** Connection settings, for the extra connection that ends an aborted call's backend. */
  readonly #config: pg.ClientConfig;
  /** `pg_terminate_backend` calls of aborted calls still under way; `close()` waits for them. */
  readonly #terminating = new Set<Promise<void>>();
  readonly #s: string;
  readonly #notifier: Notifier;
  readonly #watches = new Set<PostgresWatch>();
  /** Watches from "head + 1" still reading the head: writes wait for them (else a watch could miss them). */
  readonly #starting = new Set<Promise<void>>();
  readonly #reaper: LeaseReaper;
  #closing: Promise<void> | undefined;

  constructor(opts: ResolvedPostgresOptions) {
    this.#opts = opts;
    this.url = opts.redactedUrl;
    this.#s = ident(opts.schema);
    const config: pg.ClientConfig = {
      connectionString: opts.connectionString,
      keepAlive: true,
      connectionTimeoutMillis: opts.requestTimeoutMs,
      statement_timeout: opts.requestTimeoutMs,
      // A client that dies holding the revision lock frees it after this long, not never.
      idle_in_transaction_session_timeout: opts.requestTimeoutMs,
      // The client-side bound, for a server that never answers (a black-holed network): a little
      // later than the server's own statement_timeout, which normally fires first.
      query_timeout: opts.requestTimeoutMs + QUERY_TIMEOUT_MARGIN_MS,
    };
    this.#pool = newPool(config, opts.poolMax, 'muster');
    // Lease renewals on connections of their own: on the main pool a renewal queued behind writes
    // waiting for the revision lock (a burst of acquisitions from every member, or a writer stalled
    // mid-transaction) and sessions expired — measured: 5 clients × 40 writes in flight held a
    // renewal for 2.4 s, past a 2 s TTL. A renewal is one UPDATE of the lease's own row: it never
    // waits for the revision lock, so here it waits for nothing but the database.
    this.#leasePool = newPool(config, LEASE_POOL_MAX, 'muster-lease');
    this.#db = poolDb(this.#pool);
    this.#leaseDb = poolDb(this.#leasePool);
    this.#config = config;
    this.#notifier = new Notifier(config, `muster_${opts.schema}`, opts.watchPollIntervalMs, () =>
      this.headRevision(),
    );
    this.#reaper = new LeaseReaper({
      intervalMs: opts.reapIntervalMs,
      findExpired: async () => {
        const res = await this.#pool.query<{ id: string }>(
          `SELECT id::text AS id FROM ${this.#s}.leases WHERE expires_at <= now() ORDER BY expires_at LIMIT 64`,
        );
        return res.rows.map((r) => r.id);
      },
      reap: (id) => this.#reap(id),
    });
  }

  /** The schema holding this store's tables. */
  get schema(): string {
    return this.#opts.schema;
  }

  /** Creates or upgrades the schema (done by {@link openPostgresStore}). */
  async migrate(): Promise<number[]> {
    const client = await this.#pool.connect();
    const onError = (): void => undefined;
    client.on('error', onError);
    try {
      return await migrate(client, this.#opts.schema);
    } finally {
      client.off('error', onError);
      client.release();
    }
  }

  /** Starts this client's share of lease reaping (done by {@link openPostgresStore}). */
  startReaper(): void {
    this.#reaper.start();
  }

  /** How many expired leases this client deleted (every client reaps; see `leases.ts`). */
  get leasesReaped(): number {
    return this.#reaper.reaped;
  }

  /** Backend pid of the LISTEN connection once it is up, for fault tests. */
  async listenerPid(timeoutMs?: number): Promise<number> {
    await this.#notifier.listening(timeoutMs);
    return this.#notifier.listenerPid as number;
  }

  // ---- reads -------------------------------------------------------------------------------------

  async get(key: string, options: ReadOptions = {}): Promise<KeyValue | undefined> {
    checkKey(key);
    const r = await this.#readRange({ kind: 'key', key }, options, 0, false, false);
    return r.kvs[0];
  }

  async range(selector: string | KeySelector, options: RangeOptions = {}): Promise<RangeResult> {
    const range = toRange(selector, true);
    checkLimit(options.limit);
    const countOnly = options.countOnly === true;
    const r = await this.#readRange(range, options, options.limit ?? 0, options.keysOnly === true, countOnly);
    return { kvs: r.kvs, revision: options.revision ?? r.head, count: r.count, more: r.more };
  }

  async #readRange(
    range: Range,
    options: ReadOptions,
    limit: number,
    keysOnly: boolean,
    countOnly: boolean,
  ): Promise<RangeRead> {
    const revision = options.revision;
    if (revision !== undefined) checkRevision(revision);
    const details = { revision, ...(range.kind === 'key' ? { key: range.key } : {}) };
    return this.#run(options.signal, details, async (db) => {
      if (revision === undefined) return rangeAtHead(db, this.#s, range, limit, keysOnly, countOnly);
      const r = await rangeAtRevision(db, this.#s, range, revision, limit, keysOnly, countOnly);
      checkReadable(revision, r.head, r.compact);
      return r;
    });
  }

  async headRevision(options: { signal?: AbortSignal } = {}): Promise<number> {
    return this.#run(options.signal, {}, async (db) => {
      const res = await db.query<{ revision: string }>(
        prepared(`SELECT revision FROM ${this.#s}.meta WHERE id = 1`, []),
      );
      return Number(res.rows[0]?.revision);
    });
  }

  // ---- writes ------------------------------------------------------------------------------------

  async put(key: string, value: ValueInput, options: PutOptions = {}): Promise<PutResult> {
    checkKey(key);
    const bytes = toBytes(value, key);
    const lease = options.lease ?? NO_LEASE;
    if (lease !== NO_LEASE) checkLeaseId(lease);
    // One round trip: the schema's put() function (migration 2) does what #write does for one put.
    this.#usable(options.signal);
    if (this.#starting.size > 0) await abortable(this.#watchesStarted(), options.signal);
    const row = await this.#run(options.signal, { key, lease }, async (db) => {
      const res = await db.query<PutRow>(
        prepared(`SELECT * FROM ${this.#s}.put($1, $2, $3, $4)`, [
          keyBytes(key),
          valueBuffer(bytes),
          lease,
          `muster_${this.#opts.schema}`,
        ]),
      );
      return res.rows[0] as PutRow;
    });
    const revision = Number(row.o_revision);
    if (options.prevKv !== true) return { revision };
    const prev = row.o_found
      ? kvOf({
          key: keyBytes(key),
          value: row.o_value,
          create_revision: row.o_create_revision,
          mod_revision: row.o_mod_revision,
          version: row.o_version,
          lease: row.o_lease,
        })
      : undefined;
    return { revision, prev };
  }

  async delete(selector: string | KeySelector, options: DeleteOptions = {}): Promise<DeleteResult> {
    const range = toRange(selector, false);
    const { result, revision } = await this.#write(
      options.signal,
      range.kind === 'key' ? { key: range.key } : {},
      undefined,
      (w) => w.delete(range),
    );
    return { revision, deleted: result.length, prev: options.prevKv === true ? result : [] };
  }

  async txn(
    compares: readonly Compare[],
    onSuccess: readonly TxnOp[],
    onFailure: readonly TxnOp[] = [],
    options: { signal?: AbortSignal } = {},
  ): Promise<TxnResult> {
    if (![compares, onSuccess, onFailure].every((a: unknown) => Array.isArray(a))) {
      throw invalidArgument('txn takes arrays of compares, success operations and failure operations');
    }
    const success = prepareOps(onSuccess, 'onSuccess');
    const failure = prepareOps(onFailure, 'onFailure');
    validateCompares(compares);
    const keys = [...new Set(compares.map((c) => c.key))];
    const mayWrite = [...success, ...failure].some((op) => op.type !== 'range');
    if (!mayWrite) {
      // Read-only: one REPEATABLE READ snapshot for the compares, the ranges and the revision.
      return this.#run(options.signal, {}, (db) =>
        this.#transaction(db, 'BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY', async (client) => {
          const head = await client.query<{ revision: string }>(
            `SELECT revision FROM ${this.#s}.meta WHERE id = 1`,
          );
          const w = new WriteTxn(client, this.#opts.schema, Number(head.rows[0]?.revision));
          const current = await w.current(keys);
          const succeeded = compares.every((c) => evaluateCompare(c, current.get(c.key)));
          const results = await w.apply(succeeded ? success : failure);
          return { succeeded, revision: w.head, results };
        }),
      );
    }
    const leases = [...success, ...failure].flatMap((op) =>
      op.type === 'put' && op.lease !== NO_LEASE ? [op.lease] : [],
    );
    const prefetch = { keys, leases: [...new Set(leases)] };
    const { result, revision } = await this.#write(options.signal, {}, prefetch, async (w) => {
      const current = await w.current(keys);
      const succeeded = compares.every((c) => evaluateCompare(c, current.get(c.key)));
      return { succeeded, results: await w.apply(succeeded ? success : failure) };
    });
    return { succeeded: result.succeeded, revision, results: result.results };
  }

  async compact(revision: number): Promise<void> {
    checkRevision(revision);
    await this.#run(undefined, { revision }, (db) =>
      this.#transaction(db, 'BEGIN', async (client) => {
        const meta = await client.query<{ revision: string; compact_revision: string }>(
          `SELECT revision, compact_revision FROM ${this.#s}.meta WHERE id = 1 FOR UPDATE`,
        );
        const head = Number(meta.rows[0]?.revision);
        const compacted = Number(meta.rows[0]?.compact_revision);
        if (revision > head) throw futureRevision(revision, head);
        if (revision <= compacted) throw compactedError(revision, compacted);
        await client.query(`UPDATE ${this.#s}.meta SET compact_revision = $1 WHERE id = 1`, [revision]);
        // Keep every event from `revision` on, and below it only the newest put of each key, which
        // reads at `revision` and later still need (as etcd keeps each key's latest revision).
        await client.query(
          `DELETE FROM ${this.#s}.history h
           WHERE h.revision < $1
             AND (h.deleted OR EXISTS (
               SELECT 1 FROM ${this.#s}.history n
               WHERE n.key = h.key AND n.revision <= $1 AND (n.revision, n.seq) > (h.revision, h.seq)))`,
          [revision],
        );
      }),
    );
  }

  // ---- watches -----------------------------------------------------------------------------------

  watch(selector: string | KeySelector, options: WatchOptions = {}): Watch {
    let failWith: unknown;
    let range: Range = { kind: 'prefix', prefix: '' };
    try {
      range = toRange(selector, true);
      if (options.fromRevision !== undefined) checkRevision(options.fromRevision, 'fromRevision');
      this.#usable(undefined);
    } catch (err) {
      failWith = err;
    }
    const w = new PostgresWatch(
      {
        schema: this.#opts.schema,
        query: (text, params) => this.#pool.query(prepared(text, params)),
        onEnd: (x) => {
          this.#watches.delete(x);
          this.#notifier.delete(x);
        },
      },
      range,
      options,
      this.#opts.watchPollIntervalMs,
      failWith,
    );
    if (failWith !== undefined || w.ended) return w;
    this.#watches.add(w);
    this.#notifier.add(w);
    if (options.fromRevision === undefined) {
      const started = w.started;
      this.#starting.add(started);
      void started.then(() => this.#starting.delete(started));
    }
    return w;
  }

  // ---- leases ------------------------------------------------------------------------------------

  async grantLease(ttlSeconds: number, options: { signal?: AbortSignal } = {}): Promise<LeaseGrant> {
    checkTtl(ttlSeconds);
    return this.#run(options.signal, {}, async (db) => {
      for (;;) {
        const id = newLeaseId();
        const res = await db.query(
          `INSERT INTO ${this.#s}.leases (id, ttl_seconds, expires_at)
           VALUES ($1, $2::int, now() + $2::int * interval '1 second') ON CONFLICT (id) DO NOTHING`,
          [id, ttlSeconds],
        );
        if (res.rowCount === 1) return { id, ttlSeconds };
      }
    });
  }

  async keepAlive(id: LeaseId, options: { signal?: AbortSignal } = {}): Promise<number> {
    checkLeaseId(id);
    return this.#runOn(this.#leasePool, options.signal, { lease: id }, async (db) => {
      const res = await db.query<{ ttl_seconds: number }>(
        prepared(
          `UPDATE ${this.#s}.leases SET expires_at = now() + ttl_seconds * interval '1 second'
         WHERE id = $1 AND expires_at > now() RETURNING ttl_seconds`,
          [id],
        ),
      );
      const row = res.rows[0];
      if (row === undefined) throw leaseNotFound(id);
      return Number(row.ttl_seconds);
    });
  }

  async revokeLease(id: LeaseId, options: { signal?: AbortSignal } = {}): Promise<void> {
    checkLeaseId(id);
    await this.#write(options.signal, { lease: id }, undefined, async (w) => {
      const gone = await w.client.query(`DELETE FROM ${this.#s}.leases WHERE id = $1`, [id]);
      if (gone.rowCount !== 1) throw leaseNotFound(id);
      await w.delete({ lease: id });
    });
  }

  async leaseTimeToLive(id: LeaseId, options: { signal?: AbortSignal } = {}): Promise<LeaseInfo | undefined> {
    checkLeaseId(id);
    return this.#run(options.signal, { lease: id }, async (db) => {
      const res = await db.query<{ ttl_seconds: number; left: string; keys: Buffer[] }>(
        `SELECT l.ttl_seconds,
                GREATEST(0, ceil(extract(epoch FROM l.expires_at - now())))::bigint AS left,
                ARRAY(SELECT key FROM ${this.#s}.kv WHERE lease = l.id ORDER BY key) AS keys
         FROM ${this.#s}.leases l WHERE l.id = $1`,
        [id],
      );
      const row = res.rows[0];
      if (row === undefined) return undefined;
      return {
        id,
        ttlSeconds: Number(row.left),
        grantedTtlSeconds: Number(row.ttl_seconds),
        keys: row.keys.map((k) => k.toString('utf8')),
      };
    });
  }

  /** Deletes one expired lease and its keys at one revision, unless another client got there first. */
  async #reap(id: string): Promise<boolean> {
    const { result } = await this.#write(undefined, { lease: id }, undefined, async (w) => {
      // After the revision lock: a concurrent reaper or revoke has committed or not started, so the
      // row is either gone (nothing to do) or ours. SKIP LOCKED passes over a lease being renewed.
      const mine = await w.client.query(
        `DELETE FROM ${this.#s}.leases WHERE id = (
           SELECT id FROM ${this.#s}.leases WHERE id = $1 AND expires_at <= now() FOR UPDATE SKIP LOCKED)`,
        [id],
      );
      if (mine.rowCount !== 1) return false;
      await w.delete({ lease: id });
      return true;
    });
    return result;
  }

  // ---- lifecycle ---------------------------------------------------------------------------------

  close(): Promise<void> {
    this.#closing ??= (async () => {
      const closed = new MusterError('MUSTER_CLOSED', 'the postgres store was closed; open a new one');
      this.#reaper.stop();
      for (const w of [...this.#watches]) w.fail(closed);
      this.#notifier.close();
      await this.#reaper.idle();
      await Promise.all([...this.#terminating]);
      await Promise.all([this.#pool.end(), this.#leasePool.end()]).catch(() => undefined);
    })();
    return this.#closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  // ---- plumbing ----------------------------------------------------------------------------------

  #usable(signal: AbortSignal | undefined): void {
    if (this.#closing !== undefined)
      throw new MusterError('MUSTER_CLOSED', 'the postgres store was closed; open a new one');
    if (signal?.aborted) throw abortedError(signal);
  }

  /**
   * Runs `fn` on the pool, or — for a call with a signal — in a {@link CancelScope}, translating
   * errors. An abort rejects at once with `MUSTER_ABORTED`; the scope ends the call's backends on the
   * server (see `cancel.ts`), so its statements stop and an uncommitted write rolls back.
   */
  #run<T>(signal: AbortSignal | undefined, details: ErrorDetails, fn: (db: Db) => Promise<T>): Promise<T> {
    return this.#runOn(this.#pool, signal, details, fn);
  }

  /** {@link #run} on `pool` (the main pool or the lease pool). */
  async #runOn<T>(
    pool: pg.Pool,
    signal: AbortSignal | undefined,
    details: ErrorDetails,
    fn: (db: Db) => Promise<T>,
  ): Promise<T> {
    this.#usable(signal);
    const scope =
      signal === undefined ? undefined : new CancelScope(pool, signal, (pid) => this.#terminate(pid));
    const db = scope ?? (pool === this.#pool ? this.#db : this.#leaseDb);
    const pending = fn(db).catch((err: unknown) => {
      throw this.#closing !== undefined && !(err instanceof MusterError)
        ? new MusterError('MUSTER_CLOSED', 'the postgres store was closed; open a new one', { cause: err })
        : fromPgError(err, details);
    });
    if (scope === undefined) return pending;
    const end = (): void => scope.end();
    pending.then(end, end);
    return abortable(pending, signal);
  }

  /** Ends backend `pid` of an aborted call from a connection of its own; `close()` waits for it. */
  #terminate(pid: number): void {
    const done: Promise<void> = terminateBackend(this.#config, pid).finally(() =>
      this.#terminating.delete(done),
    );
    this.#terminating.add(done);
  }

  /**
   * `begin` (`BEGIN…`, possibly followed by more statements without parameters, sent in one round
   * trip; `fn` receives their results) … `fn` … `COMMIT` (preceded, in the same round trip, by the
   * statements `finish(result)` returns) on one pooled connection; `ROLLBACK` when anything throws.
   */
  async #transaction<T>(
    db: Db,
    begin: string,
    fn: (client: pg.PoolClient, began: pg.QueryResult[]) => Promise<T>,
    finish?: (result: T) => string,
  ): Promise<T> {
    const client = await db.connect();
    let broken: Error | undefined;
    // A connection that breaks between two statements emits 'error' on the checked-out client (the
    // pool listens only while it is idle); the next statement then fails and is translated.
    const onError = (err: Error): void => {
      broken = err;
    };
    client.on('error', onError);
    try {
      const began = (await client.query(begin)) as unknown as pg.QueryResult | pg.QueryResult[];
      const result = await fn(client, Array.isArray(began) ? began : [began]);
      const more = finish?.(result) ?? '';
      await client.query(more === '' ? 'COMMIT' : `${more}; COMMIT`);
      return result;
    } catch (err) {
      // A connection that timed out or broke is in an unknown state: destroy it, never reuse it.
      if (fromPgError(err).retryable) broken = err instanceof Error ? err : new Error(String(err));
      if (broken === undefined)
        await client.query('ROLLBACK').catch((e: unknown) => {
          broken = e instanceof Error ? e : new Error(String(e));
        });
      throw err;
    } finally {
      client.off('error', onError);
      db.release(client, broken);
    }
  }

  /**
   * Waits until the watches from "head + 1" have read their head, at most `requestTimeout` (a watch
   * that cannot reach the database either will not hold writes back for longer).
   */
  async #watchesStarted(): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, this.#opts.requestTimeoutMs);
    });
    try {
      await Promise.race([Promise.all([...this.#starting]), timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * A writing transaction (see `write.ts`): locks the revision row, runs `body`, and if it changed a
   * key, commits head + 1 and notifies watchers. Resolves the body's result and the revision (the
   * old head when nothing was written).
   */
  async #write<T>(
    signal: AbortSignal | undefined,
    details: ErrorDetails,
    prefetch: { keys: readonly string[]; leases: readonly string[] } | undefined,
    body: (w: WriteTxn) => Promise<T>,
  ): Promise<{ result: T; revision: number }> {
    this.#usable(signal);
    if (this.#starting.size > 0) await abortable(this.#watchesStarted(), signal);
    const channel = `muster_${this.#opts.schema}`;
    return this.#run(signal, details, (db) =>
      this.#transaction(
        db,
        // One round trip: begin, take the revision lock, read what the compares and leases need.
        beginSql(this.#s, prefetch?.keys ?? [], prefetch?.leases ?? []),
        async (client, began) => {
          const { head, prefetched } = prefetchedFrom(began, prefetch?.keys ?? [], prefetch?.leases ?? []);
          const w = new WriteTxn(
            client,
            this.#opts.schema,
            head,
            prefetch === undefined ? undefined : prefetched,
          );
          const result = await body(w);
          return { result, revision: w.wrote ? w.revision : w.head, wrote: w.wrote };
        },
        // One round trip: the new head, the wake-up (delivered at commit) and the commit. Both values
        // are integers and identifiers this module made, so they are inlined.
        (r) =>
          r.wrote
            ? `UPDATE ${this.#s}.meta SET revision = ${r.revision} WHERE id = 1; SELECT pg_notify('${channel}', '${r.revision}')`
            : '',
      ),
    );
  }
}
