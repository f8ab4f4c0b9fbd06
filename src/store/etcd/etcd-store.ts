/**
 * The etcd engine of the Store port, on muster's own etcd v3 client (client.ts, grpc.ts on
 * `node:http2`, rpc-codec.ts).
 *
 * Every request maps to one etcd RPC (no lease object with an automatic re-grant, no generic
 * watcher), errors go through {@link fromEtcdError}, and nothing is retried when it might already
 * have been applied. Reads are retried on other endpoints within their deadline; writes only when the
 * request certainly never left this process (no connection, or every member's breaker open).
 */
import {
  abortedError,
  type ErrorDetails,
  invalidArgument,
  isMusterError,
  MusterError,
} from '../../errors.js';
import { checkKey, checkLeaseId, checkRevision, checkTtl, MAX_TXN_OPS, toBytes, toRange } from '../keys.js';
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
import { validateCompares } from '../txn-rules.js';
import { EtcdClient, isRecoverable } from './client.js';
import { KeyCodec, toBuffer } from './codec.js';
import { fromEtcdError } from './errors.js';
import { GrpcError } from './grpc.js';
import { decode, encode, type RangeRequest, type ResponseHeader } from './rpc-codec.js';
import { abortable } from '../../util/abort.js';
import { KeepAliveChannel, type KeepAliveStream } from './keep-alive.js';
import { type EtcdStoreOptions, resolveEtcdOptions, type ResolvedEtcdOptions } from './url.js';
import { EtcdWatch, type ProgressMode, type WatchStream } from './watch.js';

/**
 * gRPC keep-alive ping interval on a connection with calls or streams open: etcd answers pings more
 * often than every 5 s (`--grpc-keepalive-min-time`, default 5 s) with GOAWAY `too_many_pings`, so
 * 6 s is as fast as a default etcd allows.
 */
export const GRPC_KEEPALIVE_MS = 6000;
/**
 * How long a ping may go unanswered before the client destroys the connection (failing its calls
 * and streams with `UNAVAILABLE`, which they retry on a new one). An answer on a live link takes well
 * under a millisecond; 2 s tolerates a stalled event loop on either side. A connection that went
 * dark with calls open is therefore dropped at most {@link GRPC_KEEPALIVE_MS} + 2 s = 8 s later.
 */
export const GRPC_KEEPALIVE_TIMEOUT_MS = 2000;
/*
 * (No pings on a connection without calls: etcd's enforcement (`PermitWithoutStream: false`) counts
 * them as strikes and answers with GOAWAY `too_many_pings`. An idle connection needs no check: a call
 * started on it has its deadline, and its pings start with it.) With several members, one that failed
 * 3 times in a row is skipped while its breaker is open (`BREAKER_BACKOFF`, breaker.ts); a single
 * endpoint has no breaker. A member whose connection attempts fail is not dialled again before its
 * reconnect back-off passes (`RECONNECT_BACKOFF`, grpc.ts).
 */
/** gRPC status CANCELLED: what a stream reports after `cancel()`. */
const GRPC_CANCELLED = 1;
/** Attempts of an idempotent read across endpoints before its error is returned. */
export const READ_ATTEMPTS = 3;
/** etcd's "require a leader" metadata on streams: a member without a leader fails them at once. */
const HAS_LEADER = { hasleader: 'true' } as const;
const KV_RANGE = '/etcdserverpb.KV/Range';

/** A call's deadline (epoch ms) and signal. */
interface CallOptions {
  readonly deadline: number;
  readonly signal?: AbortSignal | undefined;
}

/** A bidirectional stream as the watch and keep-alive code use it. */
interface AnyStream {
  on(event: 'error', listener: (err: unknown) => void): unknown;
}

/**
 * Opens the etcd engine for `url` (`etcd://h1:2379,h2:2379`, `etcds://…`). Connections are made
 * lazily, so this never waits; the first operation reports an unreachable cluster as
 * `MUSTER_UNAVAILABLE`. Throws `MUSTER_UNSUPPORTED_URL` or `MUSTER_INVALID_ARGUMENT` for a bad URL or
 * options.
 */
export function openEtcdStore(url: string, options: EtcdStoreOptions = {}): EtcdStore {
  return new EtcdStore(resolveEtcdOptions(url, options));
}

/**
 * The etcd engine. Semantics and error codes are the port's (see `src/store/types.ts` and
 * docs/store.md); what is particular to etcd — deadlines, which failures are retried, how watches
 * resume and prove progress, how leases are renewed — is in the module comment above and in the
 * "etcd engine" section of docs/store.md. Open it with {@link openEtcdStore} or `openStore(url)`.
 */
export class EtcdStore implements Store {
  readonly url: string;
  readonly #opts: ResolvedEtcdOptions;
  readonly #client: EtcdClient;
  readonly #codec: KeyCodec;
  readonly #watches = new Set<EtcdWatch>();
  readonly #keepAlive: KeepAliveChannel;
  #progressMode: Promise<ProgressMode> | undefined;
  /** Watches from "head + 1" whose server-side registration writes must wait for. */
  readonly #starting = new Set<Promise<void>>();
  /**
   * The highest revision any response has shown this client. A watch "from head + 1" starts after it
   * even on a member that has not applied it yet, so a client never watches its own past writes.
   */
  #seenRevision = 0;
  #closing: Promise<void> | undefined;

  constructor(opts: ResolvedEtcdOptions) {
    this.#opts = opts;
    this.url = opts.redactedUrl;
    this.#codec = new KeyCodec(opts.keyPrefix);
    this.#client = new EtcdClient({
      endpoints: opts.endpoints,
      tls: opts.tls
        ? {
            ...(opts.ca === undefined ? {} : { ca: opts.ca }),
            ...(opts.cert === undefined ? {} : { cert: opts.cert }),
            ...(opts.key === undefined ? {} : { key: opts.key }),
          }
        : undefined,
      auth: opts.auth,
      keepAliveMs: GRPC_KEEPALIVE_MS,
      keepAliveTimeoutMs: GRPC_KEEPALIVE_TIMEOUT_MS,
      requestTimeoutMs: opts.requestTimeoutMs,
      connectTimeoutMs: opts.connectTimeoutMs,
    });
    this.#keepAlive = new KeepAliveChannel(
      (prefer) =>
        this.#openStream<KeepAliveStream>(
          '/etcdserverpb.Lease/LeaseKeepAlive',
          encode.leaseId,
          decode.leaseKeepAlive,
          prefer,
        ),
      opts.endpoints,
    );
  }

  /** The key prefix every key is stored under. */
  get keyPrefix(): string {
    return this.#opts.keyPrefix;
  }

  // ---- reads -------------------------------------------------------------------------------------

  async get(key: string, options: ReadOptions = {}): Promise<KeyValue | undefined> {
    checkKey(key);
    if (options.revision !== undefined) checkRevision(options.revision);
    const req = encode.range({ key: this.#codec.encode(key), revision: options.revision ?? 0 });
    const res = await this.#read(options.signal, { key, revision: options.revision }, (o) =>
      this.#client.unary(KV_RANGE, req, decode.range, o),
    ).catch((err: unknown) => this.#explainCompacted(err));
    const kv = res.kvs[0];
    return kv === undefined ? undefined : this.#codec.kv(kv);
  }

  async range(selector: string | KeySelector, options: RangeOptions = {}): Promise<RangeResult> {
    const wire = this.#codec.range(selector, true);
    const limit = options.limit ?? 0;
    if (!Number.isSafeInteger(limit) || limit < 0)
      throw invalidArgument(`limit must be a non-negative integer, got ${String(limit)}`);
    if (options.revision !== undefined) checkRevision(options.revision);
    const req: RangeRequest = {
      ...wire,
      revision: options.revision ?? 0,
      limit,
      keys_only: options.keysOnly === true,
      count_only: options.countOnly === true,
    };
    const message = encode.range(req);
    const res = await this.#read(options.signal, { revision: options.revision }, (o) =>
      this.#client.unary(KV_RANGE, message, decode.range, o),
    ).catch((err: unknown) => this.#explainCompacted(err));
    const keysOnly = options.keysOnly === true;
    return {
      kvs: options.countOnly === true ? [] : res.kvs.map((kv) => this.#codec.kv(kv, keysOnly)),
      revision: options.revision ?? revisionOf(res.header),
      count: Number(res.count),
      more: options.countOnly === true ? false : res.more,
    };
  }

  async headRevision(options: { signal?: AbortSignal } = {}): Promise<number> {
    const req = encode.range({ key: this.#codec.encode('\0'), count_only: true });
    const res = await this.#read(options.signal, {}, (o) =>
      this.#client.unary(KV_RANGE, req, decode.range, o),
    );
    return revisionOf(res.header);
  }

  // ---- writes ------------------------------------------------------------------------------------

  async put(key: string, value: ValueInput, options: PutOptions = {}): Promise<PutResult> {
    checkKey(key);
    const bytes = toBytes(value, key);
    const lease = options.lease ?? NO_LEASE;
    if (lease !== NO_LEASE) checkLeaseId(lease);
    const req = encode.put({
      key: this.#codec.encode(key),
      value: toBuffer(bytes),
      lease,
      prev_kv: options.prevKv === true,
    });
    const res = await this.#write(options.signal, { key, lease }, (o) =>
      this.#client.unary('/etcdserverpb.KV/Put', req, decode.put, o),
    );
    const revision = revisionOf(res.header);
    if (options.prevKv !== true) return { revision };
    return { revision, prev: res.prev_kv ? this.#codec.kv(res.prev_kv) : undefined };
  }

  async delete(selector: string | KeySelector, options: DeleteOptions = {}): Promise<DeleteResult> {
    const wire = this.#codec.range(selector, false);
    const res = await this.#write(
      options.signal,
      typeof selector === 'string' ? { key: selector } : {},
      (o) =>
        this.#client.unary(
          '/etcdserverpb.KV/DeleteRange',
          encode.deleteRange({ ...wire, prev_kv: options.prevKv === true }),
          decode.deleteRange,
          o,
        ),
    );
    return {
      revision: revisionOf(res.header),
      deleted: Number(res.deleted),
      prev: options.prevKv === true ? (res.prev_kvs ?? []).map((kv) => this.#codec.kv(kv)) : [],
    };
  }

  async txn(
    compares: readonly Compare[],
    onSuccess: readonly TxnOp[],
    onFailure: readonly TxnOp[] = [],
    options: { signal?: AbortSignal } = {},
  ): Promise<TxnResult> {
    checkTxn(compares, onSuccess, onFailure);
    const req = encode.txn({
      compare: compares.map((c) => this.#codec.compare(c)),
      success: onSuccess.map((op) => this.#codec.op(op)),
      failure: onFailure.map((op) => this.#codec.op(op)),
    });
    const res = await this.#write(options.signal, {}, (o) =>
      this.#client.unary('/etcdserverpb.KV/Txn', req, decode.txn, o),
    );
    const revision = revisionOf(res.header);
    const ops = res.succeeded ? onSuccess : onFailure;
    return {
      succeeded: res.succeeded,
      revision,
      results: ops.map((op, i) => this.#codec.opResult(op, res.responses[i] ?? {}, revision)),
    };
  }

  async compact(revision: number): Promise<void> {
    checkRevision(revision);
    await this.#write(undefined, { revision }, (o) =>
      this.#client.unary(
        '/etcdserverpb.KV/Compact',
        encode.compact({ revision, physical: false }),
        decode.headerOnly,
        o,
      ),
    ).catch((err: unknown) => this.#explainCompacted(err));
  }

  // ---- watches -----------------------------------------------------------------------------------

  watch(selector: string | KeySelector, options: WatchOptions = {}): Watch {
    const range = this.#codec.wireRange(toRange(selector, true));
    let failWith: unknown;
    try {
      if (options.fromRevision !== undefined) checkRevision(options.fromRevision, 'fromRevision');
      this.#usable(undefined);
    } catch (err) {
      failWith = err;
    }
    const w = new EtcdWatch(
      {
        codec: this.#codec,
        openStream: async () => (await this.#openWatchStream()).stream,
        headRevision: () => this.headRevision(),
        progressMode: () => this.#detectProgressMode(),
        onEnd: (x) => this.#watches.delete(x),
      },
      range,
      { ...options, ...(options.fromRevision === undefined ? { notBefore: this.#seenRevision + 1 } : {}) },
      failWith,
    );
    if (failWith !== undefined) return w;
    this.#watches.add(w);
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
    const res = await this.#write(options.signal, {}, (o) =>
      this.#client.unary(
        '/etcdserverpb.Lease/LeaseGrant',
        encode.leaseGrant({ TTL: ttlSeconds, ID: 0 }),
        decode.leaseGrant,
        o,
      ),
    );
    if (res.error) throw fromEtcdError(new Error(res.error), {});
    return { id: String(res.ID), ttlSeconds: Number(res.TTL) };
  }

  async keepAlive(id: LeaseId, options: { signal?: AbortSignal } = {}): Promise<number> {
    checkLeaseId(id);
    this.#usable(options.signal);
    return this.#keepAlive.renew(id, this.#opts.requestTimeoutMs, options.signal);
  }

  async revokeLease(id: LeaseId, options: { signal?: AbortSignal } = {}): Promise<void> {
    checkLeaseId(id);
    await this.#write(options.signal, { lease: id }, (o) =>
      this.#client.unary('/etcdserverpb.Lease/LeaseRevoke', encode.leaseId({ ID: id }), decode.headerOnly, o),
    );
  }

  async leaseTimeToLive(id: LeaseId, options: { signal?: AbortSignal } = {}): Promise<LeaseInfo | undefined> {
    checkLeaseId(id);
    const res = await this.#read(options.signal, { lease: id }, (o) =>
      this.#client.unary(
        '/etcdserverpb.Lease/LeaseTimeToLive',
        encode.leaseTimeToLive({ ID: id, keys: true }),
        decode.leaseTimeToLive,
        o,
      ),
    );
    const ttl = Number(res.TTL);
    if (ttl < 0) return undefined;
    return {
      id,
      ttlSeconds: ttl,
      grantedTtlSeconds: Number(res.grantedTTL),
      keys: res.keys.map((k) => this.#codec.decode(k)),
    };
  }

  // ---- lifecycle ---------------------------------------------------------------------------------

  close(): Promise<void> {
    this.#closing ??= (async () => {
      const closed = new MusterError('MUSTER_CLOSED', 'the etcd store was closed; open a new one');
      for (const w of [...this.#watches]) w.fail(closed);
      this.#keepAlive.close();
      this.#client.close();
    })();
    return this.#closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  // ---- plumbing ----------------------------------------------------------------------------------

  #usable(signal: AbortSignal | undefined): void {
    if (this.#closing !== undefined)
      throw new MusterError('MUSTER_CLOSED', 'the etcd store was closed; open a new one');
    if (signal?.aborted) throw abortedError(signal);
  }

  /** An idempotent request: retried on another endpoint while it fails retryably and time is left. */
  async #read<T>(
    signal: AbortSignal | undefined,
    details: ErrorDetails,
    call: (o: CallOptions) => Promise<T>,
  ): Promise<T> {
    const deadline = Date.now() + this.#opts.requestTimeoutMs;
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.#once(signal, details, deadline, call);
      } catch (err) {
        if (!isMusterRetryable(err) || attempt >= READ_ATTEMPTS || Date.now() >= deadline) throw err;
      }
    }
  }

  /** A request that may change state: retried only when the connection was never established. */
  async #write<T>(
    signal: AbortSignal | undefined,
    details: ErrorDetails,
    call: (o: CallOptions) => Promise<T>,
  ): Promise<T> {
    const deadline = Date.now() + this.#opts.requestTimeoutMs;
    if (this.#starting.size > 0) await this.#watchesStarted(deadline);
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.#once(signal, details, deadline, call);
      } catch (err) {
        if (!neverSent(err) || attempt >= READ_ATTEMPTS || Date.now() >= deadline) throw err;
      }
    }
  }

  /** Waits (until `deadline` at most) for watches from "head + 1" to be registered on the server. */
  async #watchesStarted(deadline: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<void>(
      (resolve) => (timer = setTimeout(resolve, Math.max(0, deadline - Date.now()))),
    );
    try {
      await Promise.race([Promise.all([...this.#starting]), timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  async #once<T>(
    signal: AbortSignal | undefined,
    details: ErrorDetails,
    deadline: number,
    call: (o: CallOptions) => Promise<T>,
  ): Promise<T> {
    this.#usable(signal);
    const pending = call({ deadline, signal }).then(
      (res) => {
        const rev = revisionOf((res as { header?: ResponseHeader | null } | undefined)?.header);
        if (rev > this.#seenRevision) this.#seenRevision = rev;
        return res;
      },
      (err: unknown) => {
        throw fromEtcdError(err, details);
      },
    );
    // The call may still fail after an abort won: abortable() handles that rejection too.
    return abortable(pending, signal);
  }

  /**
   * Opens a bidirectional stream on one endpoint (`prefer` first when given), with etcd's "require a
   * leader" metadata; resolves with the stream and the endpoint it went to.
   */
  async #openStream<S extends AnyStream>(
    path: string,
    encodeRequest: (r: never) => Buffer,
    decodeResponse: (b: Buffer) => unknown,
    prefer?: string,
  ): Promise<{ stream: S; endpoint: string }> {
    if (this.#closing !== undefined) throw new MusterError('MUSTER_CLOSED', 'the etcd store was closed');
    const { stream, ...picked } = await this.#client.stream(
      path,
      encodeRequest,
      decodeResponse,
      HAS_LEADER,
      prefer,
    );
    const lease = path.startsWith('/etcdserverpb.Lease/');
    stream.on('error', (err) => {
      // A failed stream counts against its member (and makes its connection be replaced), but not
      // one we cancelled ourselves: that would cut every other stream to the member too. Nor does
      // "no leader" on a renewal: the member is alive and mid-election, and a renewal asks another
      // member next (tripping its breaker would take it away for seconds, longer than a session lasts).
      const cancelled = err.code === GRPC_CANCELLED;
      const electing = lease && err.message.includes('no leader');
      if (stream.writable && !cancelled && !electing && isRecoverable(err)) this.#client.markFailed(picked);
      // An expired token: the next stream authenticates again (unary calls do this themselves).
      if (err.message.includes('invalid auth token')) this.#client.invalidateToken();
    });
    return { stream: stream as unknown as S, endpoint: picked.member.endpoint };
  }

  #openWatchStream(): Promise<{ stream: WatchStream; endpoint: string }> {
    return this.#openStream<WatchStream>('/etcdserverpb.Watch/Watch', encode.watch, decode.watch);
  }

  /**
   * Rethrows `err`; a `MUSTER_COMPACTED` from a read gains `details.compactRevision`, which etcd's
   * read error does not carry: a watch from revision 1 is cancelled with it.
   */
  async #explainCompacted(err: unknown): Promise<never> {
    if (!isMusterError(err, 'MUSTER_COMPACTED') || err.details.compactRevision !== undefined) throw err;
    const compactRevision = await this.#probeCompactRevision().catch(() => undefined);
    if (compactRevision === undefined) throw err;
    throw new MusterError(
      'MUSTER_COMPACTED',
      `revision ${err.details.revision ?? '?'} has been compacted (history before ${compactRevision} is gone); re-list and watch from the new revision`,
      { cause: err.cause, details: { ...err.details, compactRevision } },
    );
  }

  async #probeCompactRevision(): Promise<number | undefined> {
    const { stream } = await this.#openWatchStream();
    return new Promise<number | undefined>((resolve) => {
      const done = (rev: number | undefined): void => {
        clearTimeout(timer);
        stream.cancel();
        resolve(rev);
      };
      const timer = setTimeout(() => done(undefined), 1000);
      stream.on('data', (res) => {
        const rev = Number(res.compact_revision);
        if (rev > 0) done(rev);
      });
      stream.on('error', () => done(undefined));
      stream.write({ create_request: { key: this.#codec.encode('\0'), start_revision: 1 } });
    });
  }

  /** Asks one member its version: servers with the fix for etcd#15220 answer progress requests safely. */
  #detectProgressMode(): Promise<ProgressMode> {
    this.#progressMode ??= this.#read(undefined, {}, (o) =>
      this.#client.unary('/etcdserverpb.Maintenance/Status', encode.empty(), decode.status, o),
    ).then(
      (status) => progressModeFor(status.version),
      (err: unknown) => {
        this.#progressMode = undefined;
        throw err;
      },
    );
    return this.#progressMode;
  }
}

/** `'request'` when etcd `version` sends requested progress in order with events (≥ 3.4.25, ≥ 3.5.8). */
export function progressModeFor(version: string): ProgressMode {
  const [major = 0, minor = 0, patch = 0] = version.split('.').map((p) => Number.parseInt(p, 10) || 0);
  if (major > 3 || (major === 3 && minor >= 6)) return 'request';
  if (major === 3 && minor === 5) return patch >= 8 ? 'request' : 'periodic';
  if (major === 3 && minor === 4) return patch >= 25 ? 'request' : 'periodic';
  return 'periodic';
}

function revisionOf(header: ResponseHeader | null | undefined): number {
  return Number(header?.revision ?? 0);
}

function isMusterRetryable(err: unknown): boolean {
  return err instanceof MusterError && err.retryable;
}

/** True when the request certainly never reached a server (so repeating a write is safe). */
function neverSent(err: unknown): boolean {
  if (!(err instanceof MusterError) || err.code !== 'MUSTER_UNAVAILABLE') return false;
  return err.cause instanceof GrpcError && err.cause.neverSent;
}

function checkTxn(
  compares: readonly Compare[],
  onSuccess: readonly TxnOp[],
  onFailure: readonly TxnOp[],
): void {
  if (![compares, onSuccess, onFailure].every((a: unknown) => Array.isArray(a))) {
    throw invalidArgument('txn takes arrays of compares, success operations and failure operations');
  }
  checkOps('onSuccess', onSuccess);
  checkOps('onFailure', onFailure);
  validateCompares(compares);
}

function checkOps(branch: string, ops: readonly TxnOp[]): void {
  if (ops.length > MAX_TXN_OPS) {
    throw new MusterError(
      'MUSTER_TXN_TOO_LARGE',
      `${branch} has ${ops.length} operations; the limit is ${MAX_TXN_OPS}`,
    );
  }
  for (const op of ops) {
    if (op === null || typeof op !== 'object')
      throw invalidArgument(`${branch} holds a non-object operation`);
    if (op.type === 'put') {
      checkKey(op.key);
      toBytes(op.value, op.key);
      if (op.lease !== undefined && op.lease !== NO_LEASE) checkLeaseId(op.lease);
    } else if (op.type === 'delete') {
      toRange(op.selector, false);
    } else if (op.type === 'range') {
      toRange(op.selector, true);
    } else {
      throw invalidArgument(
        `unknown transaction operation type '${String((op as { type?: unknown }).type)}'`,
      );
    }
  }
}
