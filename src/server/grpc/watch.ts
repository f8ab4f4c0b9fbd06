/**
 * The etcd Watch service: one bidirectional stream carries many watchers.
 *
 * Each watcher is a memory-engine watch pumped onto the stream in revision order; a response never
 * ends inside a revision. Progress follows etcd ≥ 3.4.25: a `progress_request` is answered with
 * `watch_id = -1` and the head revision once every watcher on the stream has sent everything up to
 * that revision, so the answer never overtakes an event. Watchers created with `progress_notify`
 * get their own progress response when they were idle for a whole interval. A watcher created at a
 * compacted revision is cancelled with `compact_revision` set, as etcd does.
 */
import { isMusterError } from '../../errors.js';
import type { MemoryWatch } from '../../store/internal.js';
import type { Watch, WatchEvent } from '../../store/internal.js';
import type { ServiceImplementation, StreamCall } from './call.js';
import { failStream, header, type ServiceContext } from './context.js';
import { rangeOf } from './auth.js';
import { kvOut, selectorOf } from './convert.js';
import { ETCD, toGrpcError } from './errors.js';
import { encodeEvent } from './wire.js';

interface CreateRequest {
  key: Buffer;
  range_end: Buffer;
  start_revision: string;
  progress_notify: boolean;
  filters: number[];
  prev_kv: boolean;
  watch_id: string;
}
interface WatchRequest {
  request_union?: 'create_request' | 'cancel_request' | 'progress_request';
  create_request?: CreateRequest;
  cancel_request?: { watch_id: string };
  progress_request?: Record<string, never>;
}

/** `WatchCreateRequest.FilterType`. */
const NOPUT = 0;
const NODELETE = 1;
/** Most revisions in one response while a watcher catches up (etcd's `watchBatchMaxRevs`). */
export const MAX_REVISIONS_PER_RESPONSE = 1000;
/** The watch id of responses that belong to no watcher (stream-wide progress). */
const NO_WATCH_ID = -1;

/** One outstanding stream-wide progress request. */
interface ProgressAll {
  readonly remaining: Set<number>;
  revision: number;
}

interface Watcher {
  readonly id: number;
  readonly watch: Watch;
  readonly startRevision: number;
  readonly noPut: boolean;
  readonly noDelete: boolean;
  readonly notify: boolean;
  /** Why each requested progress batch was asked for, in order. */
  readonly reasons: (ProgressAll | 'notify')[];
  /** Sent something since the last periodic check. */
  active: boolean;
  canceled: boolean;
}

/** The Watch service implementation. */
export function watchService(ctx: ServiceContext): ServiceImplementation {
  return {
    Watch: (call: StreamCall<WatchRequest, unknown>) => {
      let user: string | undefined;
      try {
        user = ctx.auth.check(call.metadata);
      } catch (err) {
        failStream(call, err);
        return;
      }
      new WatchStream(ctx, call, user).start();
    },
  };
}

class WatchStream {
  readonly #ctx: ServiceContext;
  readonly #call: StreamCall<WatchRequest, unknown>;
  readonly #watchers = new Map<number, Watcher>();
  #nextId = 0;
  #timer: NodeJS.Timeout | undefined;
  #ended = false;
  readonly #handle = { end: (): void => this.#end(true) };

  /** The RBAC user whose read permissions each watcher needs (undefined: anything goes). */
  readonly #user: string | undefined;

  constructor(ctx: ServiceContext, call: StreamCall<WatchRequest, unknown>, user: string | undefined) {
    this.#ctx = ctx;
    this.#call = call;
    this.#user = user;
  }

  start(): void {
    this.#ctx.streams.add(this.#handle);
    this.#call.on('data', (req: WatchRequest) => this.#onRequest(req));
    this.#call.on('end', () => this.#end(true));
    this.#call.on('cancelled', () => this.#end(false));
    this.#call.on('error', () => this.#end(false));
  }

  #onRequest(req: WatchRequest): void {
    if (this.#ended) return;
    try {
      if (req.create_request) this.#create(req.create_request);
      else if (req.cancel_request) this.#cancel(Number(req.cancel_request.watch_id));
      else if (req.progress_request) this.#progressAll();
    } catch (err) {
      // A bad create request: etcd answers created + canceled with the reason.
      this.#send({
        header: header(this.#ctx, this.#ctx.store.revision),
        watch_id: NO_WATCH_ID,
        created: true,
        canceled: true,
        cancel_reason: toGrpcError(err).details,
      });
    }
  }

  #create(req: CreateRequest): void {
    const selector = selectorOf(req.key, req.range_end);
    if (this.#user !== undefined) {
      const [k, e] = rangeOf(req.key, req.range_end);
      this.#ctx.auth.authorize(this.#user, k, e, false);
    }
    let id = Number(req.watch_id);
    if (id > 0) {
      if (this.#watchers.has(id)) throw ETCD.invalid(`watch id ${id} is already in use on this stream`);
    } else {
      while (this.#watchers.has(this.#nextId)) this.#nextId++;
      id = this.#nextId++;
    }
    const start = Number(req.start_revision);
    const watch = this.#ctx.store.watch(selector, {
      ...(start > 0 ? { fromRevision: start } : {}),
      prevKv: req.prev_kv,
    });
    const filters = req.filters ?? [];
    const w: Watcher = {
      id,
      watch,
      startRevision: start,
      noPut: filters.includes(NOPUT),
      noDelete: filters.includes(NODELETE),
      notify: req.progress_notify,
      reasons: [],
      active: false,
      canceled: false,
    };
    this.#watchers.set(id, w);
    this.#send({ header: header(this.#ctx, this.#ctx.store.revision), watch_id: id, created: true });
    if (w.notify) this.#armNotify();
    this.#pump(w).catch((err: unknown) => this.#ctx.log?.error({ err }, 'watch pump failed'));
  }

  async #pump(w: Watcher): Promise<void> {
    const it = w.watch[Symbol.asyncIterator]();
    const queued = w.watch as Partial<Pick<MemoryWatch, 'pending'>>;
    // Events of consecutive revisions that were already queued go out in one response (etcd sends
    // up to 1,000 revisions a response when a watcher catches up); a live watcher, whose queue is
    // empty, still gets each revision as soon as it is durable.
    let out: Buffer[] = [];
    let outRev = 0;
    let outRevs = 0;
    const flush = (): void => {
      if (out.length === 0) return;
      this.#send({ header: header(this.#ctx, outRev), watch_id: w.id, events: out });
      out = [];
      outRevs = 0;
    };
    try {
      for (;;) {
        if (out.length > 0 && ((queued.pending ?? 0) === 0 || outRevs >= MAX_REVISIONS_PER_RESPONSE)) flush();
        const next = await it.next();
        if (next.done === true) break;
        const batch = next.value;
        if (w.canceled || this.#ended) return;
        if (batch.type === 'events') {
          if (batch.revision < w.startRevision) continue; // a future start revision
          w.active = true;
          let any = false;
          for (const e of batch.events) {
            if (e.type === 'put' ? w.noPut : w.noDelete) continue;
            out.push(eventBytes(e));
            any = true;
          }
          if (any) {
            outRev = batch.revision;
            outRevs++;
          }
          continue;
        }
        flush();
        const reason = w.reasons.shift();
        if (reason === 'notify') {
          if (batch.revision + 1 < w.startRevision) continue; // not caught up with its start yet
          this.#send({ header: header(this.#ctx, batch.revision), watch_id: w.id, events: [] });
        } else if (reason !== undefined) {
          reason.revision = Math.max(reason.revision, batch.revision);
          reason.remaining.delete(w.id);
          this.#settle(reason);
        }
      }
      flush();
    } catch (err) {
      if (w.canceled || this.#ended) return;
      flush();
      this.#drop(w);
      const compactRevision = isMusterError(err, 'MUSTER_COMPACTED')
        ? Number(err.details.compactRevision ?? 0)
        : 0;
      this.#send({
        header: header(this.#ctx, this.#ctx.store.revision),
        watch_id: w.id,
        canceled: true,
        compact_revision: compactRevision,
        cancel_reason: toGrpcError(err).details,
      });
    }
  }

  #cancel(id: number): void {
    const w = this.#watchers.get(id);
    if (w === undefined) return;
    this.#drop(w);
    this.#send({ header: header(this.#ctx, this.#ctx.store.revision), watch_id: id, canceled: true });
  }

  /** Forgets a watcher; progress requests that waited for it no longer do. */
  #drop(w: Watcher): void {
    w.canceled = true;
    this.#watchers.delete(w.id);
    w.watch.close();
    for (const reason of w.reasons) {
      if (reason === 'notify') continue;
      reason.remaining.delete(w.id);
      this.#settle(reason);
    }
    w.reasons.length = 0;
  }

  #progressAll(): void {
    if (this.#watchers.size === 0) {
      this.#ctx.store.headRevision().then(
        (rev) => this.#send({ header: header(this.#ctx, rev), watch_id: NO_WATCH_ID }),
        (err: unknown) => this.#fail(err),
      );
      return;
    }
    const request: ProgressAll = { remaining: new Set(this.#watchers.keys()), revision: 0 };
    for (const w of this.#watchers.values()) {
      w.reasons.push(request);
      w.watch.requestProgress();
    }
  }

  #settle(request: ProgressAll): void {
    if (request.remaining.size > 0) return;
    request.remaining.add(NaN); // settle once
    this.#send({ header: header(this.#ctx, request.revision), watch_id: NO_WATCH_ID });
  }

  #armNotify(): void {
    if (this.#timer !== undefined) return;
    this.#timer = setInterval(() => {
      let any = false;
      for (const w of this.#watchers.values()) {
        if (!w.notify) continue;
        any = true;
        if (!w.active && !w.reasons.includes('notify')) {
          w.reasons.push('notify');
          w.watch.requestProgress();
        }
        w.active = false;
      }
      if (!any) this.#clearTimer();
    }, this.#ctx.progressNotifyMs);
    this.#timer.unref();
  }

  #clearTimer(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
  }

  #send(response: Record<string, unknown>): void {
    if (this.#ended) return;
    this.#call.write(response);
  }

  #fail(err: unknown): void {
    if (this.#ended) return;
    this.#end(false);
    failStream(this.#call, err);
  }

  #end(endCall: boolean): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#ctx.streams.delete(this.#handle);
    this.#clearTimer();
    for (const w of this.#watchers.values()) {
      w.canceled = true;
      w.watch.close();
    }
    this.#watchers.clear();
    if (endCall) this.#call.end();
  }
}

/**
 * Each event's bytes, encoded once and shared by every watcher it goes to (the engine hands the
 * same event object to all of them; a watcher with `prev_kv` gets another object, with `prev`).
 */
const encoded = new WeakMap<WatchEvent, Buffer>();

function eventBytes(e: WatchEvent): Buffer {
  let bytes = encoded.get(e);
  if (bytes === undefined) {
    bytes = encodeEvent(eventOut(e));
    encoded.set(e, bytes);
  }
  return bytes;
}

function eventOut(e: WatchEvent): {
  type: number;
  kv: ReturnType<typeof kvOut>;
  prev_kv: ReturnType<typeof kvOut> | null;
} {
  return {
    type: e.type === 'put' ? 0 : 1,
    kv: kvOut(e.kv),
    prev_kv: e.prev ? kvOut(e.prev) : null,
  };
}
