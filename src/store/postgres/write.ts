/**
 * One writing transaction: the revision lock, the operations, the new revision and the notification.
 *
 * {@link WriteTxn} runs on one pooled connection inside `BEGIN … COMMIT` at READ COMMITTED. Its
 * first statement locks the single `meta` row (`SELECT revision … FOR UPDATE`), so writing
 * transactions run one at a time, in lock order; every later statement takes a fresh snapshot that
 * includes every transaction committed before the lock was granted. The transaction therefore reads
 * (compares, prevKv, ranges) the latest committed state and nothing can commit in between: it is
 * serialisable with respect to every other writer without SERIALIZABLE's retries. Its revision is
 * head + 1, written back only if it changed a key, so revisions are gap-free (a rollback undoes the
 * increment with everything else) and in commit order (the lock is held until commit).
 */
import type { PoolClient } from 'pg';
import { MusterError } from '../../errors.js';
import type { Range } from '../keys.js';
import type { KeyValue, TxnOpResult } from '../types.js';
import { type KvRow, keyBytes, kvOf, prepared, rangeCondition, valueBuffer } from './codec.js';
import type { PreparedOp } from '../memory/txn-ops.js';

const KV_COLUMNS = 'key, value, create_revision, mod_revision, version, lease';

/** The state of one writing transaction, handed to the code that runs its operations. */
export class WriteTxn {
  readonly client: PoolClient;
  readonly #s: string;
  /** The head revision when the lock was taken. */
  readonly head: number;
  /** The revision this transaction commits at, if it writes. */
  readonly revision: number;
  #seq = 0;
  readonly #prefetched: Prefetched | undefined;

  constructor(client: PoolClient, schema: string, head: number, prefetched?: Prefetched) {
    this.client = client;
    this.#s = `"${schema}"`;
    this.head = head;
    this.revision = head + 1;
    this.#prefetched = prefetched;
  }

  /** True once an operation changed a key (the transaction then commits a new revision). */
  get wrote(): boolean {
    return this.#seq > 0;
  }

  /** The current values of `keys` (for compares), by key. */
  async current(keys: readonly string[]): Promise<Map<string, KeyValue>> {
    if (keys.length === 0) return new Map();
    const pre = this.#prefetched;
    if (pre !== undefined && keys.every((k) => pre.keys.has(k))) {
      return new Map([...pre.current].filter(([k]) => keys.includes(k)));
    }
    const res = await this.client.query<KvRow>(
      prepared(`SELECT ${KV_COLUMNS} FROM ${this.#s}.kv WHERE key = ANY($1::bytea[])`, [keys.map(keyBytes)]),
    );
    return new Map(res.rows.map((r) => [r.key.toString('utf8'), kvOf(r)]));
  }

  /** Throws `MUSTER_LEASE_NOT_FOUND` unless every lease exists and has not expired (database clock). */
  async checkLeases(leases: readonly string[]): Promise<void> {
    const wanted = [...new Set(leases.filter((l) => l !== '0'))];
    if (wanted.length === 0) return;
    const pre = this.#prefetched;
    const found =
      pre !== undefined && wanted.every((l) => pre.leases.has(l))
        ? pre.liveLeases
        : new Set(
            (
              await this.client.query<{ id: string }>(
                prepared(
                  `SELECT id::text AS id FROM ${this.#s}.leases WHERE id = ANY($1::bigint[]) AND expires_at > now()`,
                  [wanted],
                ),
              )
            ).rows.map((r) => r.id),
          );
    const missing = wanted.find((l) => !found.has(l));
    if (missing !== undefined) {
      throw new MusterError(
        'MUSTER_LEASE_NOT_FOUND',
        `lease ${missing} does not exist (expired, revoked or never granted)`,
        { details: { lease: missing } },
      );
    }
  }

  /** Puts one key at this transaction's revision; returns its previous value. */
  async put(key: string, value: Uint8Array, lease: string): Promise<KeyValue | undefined> {
    const seq = this.#seq++;
    const res = await this.client.query<KvRow & { prev: boolean }>(
      prepared(
        `WITH prev AS (SELECT ${KV_COLUMNS} FROM ${this.#s}.kv WHERE key = $1),
       up AS (
         INSERT INTO ${this.#s}.kv AS k (key, value, create_revision, mod_revision, version, lease)
         VALUES ($1, $2, $3, $3, 1, $4)
         ON CONFLICT (key) DO UPDATE
           SET value = excluded.value, mod_revision = excluded.mod_revision,
               version = k.version + 1, lease = excluded.lease
         RETURNING key, value, create_revision, version, lease),
       ev AS (
         INSERT INTO ${this.#s}.history (revision, seq, key, deleted, value, create_revision, version, lease)
         SELECT $3, $5, key, false, value, create_revision, version, lease FROM up)
       SELECT ${KV_COLUMNS} FROM prev`,
        [keyBytes(key), valueBuffer(value), this.revision, lease, seq],
      ),
    );
    const row = res.rows[0];
    return row === undefined ? undefined : kvOf(row);
  }

  /** Deletes the keys in `range` (or of `lease`) at this revision; returns what was deleted, in key order. */
  async delete(target: Range | { readonly lease: string }): Promise<KeyValue[]> {
    const cond =
      'lease' in target ? { sql: 'lease = $3', params: [target.lease] } : rangeCondition(target, 'key', 3);
    const res = await this.client.query<KvRow>(
      prepared(
        `WITH d AS (DELETE FROM ${this.#s}.kv WHERE ${cond.sql} RETURNING ${KV_COLUMNS}),
       ev AS (
         INSERT INTO ${this.#s}.history (revision, seq, key, deleted, value, create_revision, version, lease)
         SELECT $1, $2 + (row_number() OVER (ORDER BY key))::int - 1, key, true, '\\x'::bytea, 0, 0, 0 FROM d)
       SELECT ${KV_COLUMNS} FROM d ORDER BY key`,
        [this.revision, this.#seq, ...cond.params],
      ),
    );
    this.#seq += res.rows.length;
    return res.rows.map((r) => kvOf(r));
  }

  /** Runs prepared operations in order; a range sees this transaction's earlier writes. */
  async apply(ops: readonly PreparedOp[]): Promise<TxnOpResult[]> {
    await this.checkLeases(ops.flatMap((op) => (op.type === 'put' ? [op.lease] : [])));
    const results: TxnOpResult[] = [];
    for (const op of ops) {
      if (op.type === 'put') {
        await this.put(op.key, op.value, op.lease);
        results.push({ type: 'put', revision: this.revision });
      } else if (op.type === 'delete') {
        results.push({ type: 'delete', deleted: (await this.delete(op.range)).length });
      } else {
        const r = await rangeAtHead(this.client, this.#s, op.range, op.limit, op.keysOnly, false);
        results.push({ type: 'range', kvs: r.kvs, count: r.count, more: r.more });
      }
    }
    return results;
  }
}

/** What a writing transaction read in its first round trip, right after taking the lock. */
export interface Prefetched {
  readonly keys: ReadonlySet<string>;
  readonly current: ReadonlyMap<string, KeyValue>;
  readonly leases: ReadonlySet<string>;
  readonly liveLeases: ReadonlySet<string>;
}

/**
 * The first round trip of a writing transaction, as one simple-protocol message (which cannot carry
 * parameters): `BEGIN`, the revision lock, and — for a transaction's compares and leases — the
 * current values of `keys` and which of `leases` are alive. Keys travel hex-encoded and lease ids
 * are validated decimal strings, so nothing a caller passes is ever interpreted as SQL.
 * Results: [BEGIN, lock, keys?, leases?]; {@link prefetchedFrom} reads them.
 */
export function beginSql(s: string, keys: readonly string[], leases: readonly string[]): string {
  const parts = ['BEGIN', `SELECT revision FROM ${s}.meta WHERE id = 1 FOR UPDATE`];
  if (keys.length > 0) {
    const list = keys.map((k) => `decode('${keyBytes(k).toString('hex')}', 'hex')`).join(', ');
    parts.push(`SELECT ${KV_COLUMNS} FROM ${s}.kv WHERE key IN (${list})`);
  }
  const ids = leases.filter((l) => /^[1-9]\d{0,18}$/.test(l));
  if (ids.length > 0) {
    parts.push(
      `SELECT id::text AS id FROM ${s}.leases WHERE id IN (${ids.join(', ')}) AND expires_at > now()`,
    );
  }
  return parts.join('; ');
}

/** The head and {@link Prefetched} values from the results of {@link beginSql}. */
export function prefetchedFrom(
  began: readonly { rows: unknown[] }[],
  keys: readonly string[],
  leases: readonly string[],
): { head: number; prefetched: Prefetched } {
  const head = Number((began[1]?.rows[0] as { revision?: string } | undefined)?.revision);
  let i = 2;
  const current = new Map<string, KeyValue>();
  if (keys.length > 0) {
    for (const row of (began[i++]?.rows ?? []) as KvRow[]) current.set(row.key.toString('utf8'), kvOf(row));
  }
  const ids = leases.filter((l) => /^[1-9]\d{0,18}$/.test(l));
  const live = new Set<string>();
  if (ids.length > 0) for (const row of (began[i]?.rows ?? []) as { id: string }[]) live.add(row.id);
  return {
    head,
    prefetched: { keys: new Set(keys), current, leases: new Set(ids), liveLeases: live },
  };
}

/** The result of a range read, with the head and compaction point of the same snapshot. */
export interface RangeRead {
  readonly kvs: KeyValue[];
  readonly count: number;
  readonly more: boolean;
  readonly head: number;
  readonly compact: number;
}

type RangeRow = KvRow & { head: string; compact: string; total: string | null };

/**
 * Reads a range of the current state in ONE statement (one snapshot): the keys, their count, and
 * the head revision they are at. `s` is the quoted schema.
 */
export async function rangeAtHead(
  q: Pick<PoolClient, 'query'>,
  s: string,
  range: Range,
  limit: number,
  keysOnly: boolean,
  countOnly: boolean,
): Promise<RangeRead> {
  const cond = rangeCondition(range, 'key', 2);
  const value = keysOnly ? `'\\x'::bytea AS value` : 'value';
  const sql = countOnly
    ? `SELECT m.revision AS head, m.compact_revision AS compact,
         (SELECT count(*) FROM ${s}.kv WHERE ${cond.sql}) AS total
       FROM ${s}.meta m WHERE m.id = 1`
    : `SELECT m.revision AS head, m.compact_revision AS compact, r.*
       FROM ${s}.meta m LEFT JOIN LATERAL (
         SELECT key, ${value}, create_revision, mod_revision, version, lease, count(*) OVER () AS total
         FROM ${s}.kv WHERE ${cond.sql} ORDER BY key LIMIT $1
       ) r ON true WHERE m.id = 1`;
  // LIMIT NULL is no limit; countOnly leaves $1 unused, so it gets a type.
  const limitParam = countOnly ? `${sql} AND $1::bigint IS NULL` : sql;
  return shape(
    await q.query<RangeRow>(prepared(limitParam, [countOnly || limit <= 0 ? null : limit, ...cond.params])),
    countOnly,
  );
}

/**
 * Reads a range as it was at `revision`, from `history`, in one statement. The caller checks
 * `head` and `compact` of the result (a read past the head or below the compaction point).
 */
export async function rangeAtRevision(
  q: Pick<PoolClient, 'query'>,
  s: string,
  range: Range,
  revision: number,
  limit: number,
  keysOnly: boolean,
  countOnly: boolean,
): Promise<RangeRead> {
  const cond = rangeCondition(range, 'key', 3);
  const value = keysOnly ? `'\\x'::bytea AS value` : 'value';
  const latest = `SELECT DISTINCT ON (key) key, deleted, value, create_revision, revision AS mod_revision, version, lease
       FROM ${s}.history WHERE revision <= $1 AND ${cond.sql}
       ORDER BY key, revision DESC, seq DESC`;
  const sql = countOnly
    ? `SELECT m.revision AS head, m.compact_revision AS compact,
         (SELECT count(*) FROM (${latest}) h WHERE NOT deleted) AS total
       FROM ${s}.meta m WHERE m.id = 1`
    : `SELECT m.revision AS head, m.compact_revision AS compact, r.*
       FROM ${s}.meta m LEFT JOIN LATERAL (
         SELECT key, ${value}, create_revision, mod_revision, version, lease, count(*) OVER () AS total
         FROM (${latest}) h WHERE NOT deleted ORDER BY key LIMIT $2
       ) r ON true WHERE m.id = 1`;
  const limitParam = countOnly ? `${sql} AND $2::bigint IS NULL` : sql;
  return shape(
    await q.query<RangeRow>(
      prepared(limitParam, [revision, countOnly || limit <= 0 ? null : limit, ...cond.params]),
    ),
    countOnly,
  );
}

function shape(res: { rows: RangeRow[] }, countOnly: boolean): RangeRead {
  const first = res.rows[0];
  if (first === undefined) throw new MusterError('MUSTER_INTERNAL', 'the meta row of the store is missing');
  const kvs = countOnly || first.key === null ? [] : res.rows.map((r) => kvOf(r));
  const count = first.total === null ? 0 : Number(first.total);
  return {
    kvs,
    count,
    more: !countOnly && kvs.length < count,
    head: Number(first.head),
    compact: Number(first.compact),
  };
}
