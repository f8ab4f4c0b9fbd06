/**
 * A service this node serves: its handlers, its membership (a plain instance record, or a
 * partitioned handle for keyed services), the fencing check and the per-method statistics that the
 * built-in `$info` method reports.
 */
import { MusterError } from '../errors.js';
import type { Member } from '../membership/index.js';
import type { AcquireContext, PartitionedHandle } from '../partitions/index.js';
import { onAbort } from '../util/abort.js';
import { CallContext, CallList, type CallSignal } from './call-signal.js';
import type { Connection, RequestBody } from './connection.js';
import type { BusMetrics } from './metrics.js';
import type { Handler } from './types.js';

/** Per-method counters for `$info` and `muster bus ls`. */
export interface MethodStats {
  requests: number;
  errors: number;
  /** Sum of handler durations, ms. */
  totalMs: number;
  maxMs: number;
}

export class ServedService {
  readonly service: string;
  readonly handlers: ReadonlyMap<string, Handler>;
  readonly maxInFlight: number;
  /** Fires when the service stops being served (close, leave). */
  readonly #leaving = new AbortController();
  /** Partitions this node owns, with their acquire context (keyed services only). */
  readonly owned = new Map<string, AcquireContext>();
  readonly stats = new Map<string, MethodStats>();
  readonly startedAt = new Date().toISOString();
  member: Member | undefined;
  partitioned: PartitionedHandle | undefined;
  #inFlight = 0;
  readonly #metrics: BusMetrics;
  readonly #idle = new Set<() => void>();
  /** Calls running now: aborted together when the service stops being served. */
  readonly #running = new CallList();

  constructor(service: string, handlers: Record<string, Handler>, maxInFlight: number, metrics: BusMetrics) {
    this.service = service;
    this.handlers = new Map(Object.entries(handlers));
    this.maxInFlight = maxInFlight;
    this.#metrics = metrics;
    for (const m of this.handlers.keys()) this.stats.set(m, { requests: 0, errors: 0, totalMs: 0, maxMs: 0 });
  }

  get leaving(): AbortSignal {
    return this.#leaving.signal;
  }

  get inFlight(): number {
    return this.#inFlight;
  }

  /** Runs one call; the answer goes back on `conn`. */
  dispatch(conn: Connection, id: number, body: RequestBody, call: CallSignal): void {
    if (body.m === '$info') {
      conn.respond(id, this.info());
      return;
    }
    const handler = this.handlers.get(body.m);
    if (handler === undefined) {
      conn.fail(
        id,
        new MusterError('MUSTER_UNKNOWN_METHOD', `service '${this.service}' has no method '${body.m}'`, {
          details: { service: this.service, method: body.m, methods: [...this.handlers.keys()] },
        }),
        'bus',
      );
      return;
    }
    if (this.#leaving.signal.aborted) {
      conn.fail(id, notServed(this.service), 'bus');
      return;
    }
    if (this.#inFlight >= this.maxInFlight) {
      conn.fail(
        id,
        new MusterError(
          'MUSTER_OVERLOADED',
          `service '${this.service}' is running ${this.#inFlight} calls (maxInFlight ${this.maxInFlight})`,
          { details: { service: this.service, inFlight: this.#inFlight, sent: true, ran: false } },
        ),
        'bus',
      );
      return;
    }
    let partition: string | undefined;
    let token: number | undefined;
    let offOwnership: (() => void) | undefined;
    if (body.p !== undefined) {
      // The fencing check: run only for the owner whose token the call carries, and only while that
      // ownership may still act (checked synchronously right before the handler starts).
      const ctx = this.owned.get(body.p);
      if (ctx === undefined || ctx.token !== body.t || !ctx.valid()) {
        conn.fail(
          id,
          new MusterError(
            'MUSTER_NOT_OWNER',
            `this instance does not own partition ${body.p} with token ${String(body.t)} (its token: ${ctx?.valid() ? ctx.token : 'none'})`,
            {
              details: {
                partition: body.p,
                carried: body.t ?? null,
                token: ctx?.valid() ? ctx.token : null,
                ran: false,
              },
            },
          ),
          'bus',
        );
        return;
      }
      offOwnership = onAbort(ctx.signal, (reason) => call.abort(reason));
      partition = body.p;
      token = ctx.token;
    }
    // The signal is made only if the handler reads it (see call-signal.ts).
    const context = new CallContext(call, conn.caller, partition, token);
    this.#running.add(call);
    const stats = this.stats.get(body.m) as MethodStats;
    stats.requests++;
    this.#inFlight++;
    const started = performance.now();
    const done = (outcome: string): void => {
      const ms = performance.now() - started;
      stats.totalMs += ms;
      if (ms > stats.maxMs) stats.maxMs = ms;
      this.#metrics.handled(this.service, body.m, outcome, ms / 1000);
      this.#running.delete(call);
      offOwnership?.();
      if (--this.#inFlight === 0) for (const f of [...this.#idle]) f();
    };
    let result: unknown;
    try {
      result = handler(body.a, context);
    } catch (err) {
      stats.errors++;
      done(codeOf(err));
      conn.fail(id, err, 'handler');
      return;
    }
    if (isThenable(result)) {
      result.then(
        (value) => {
          done('ok');
          conn.respond(id, value);
        },
        (err: unknown) => {
          stats.errors++;
          done(codeOf(err));
          conn.fail(id, err, 'handler');
        },
      );
    } else {
      done('ok');
      conn.respond(id, result);
    }
  }

  info(): unknown {
    return {
      service: this.service,
      startedAt: this.startedAt,
      inFlight: this.#inFlight,
      owned: [...this.owned.entries()].map(([partition, ctx]) => ({ partition, token: ctx.token })),
      methods: Object.fromEntries(
        [...this.stats].map(([m, s]) => [
          m,
          {
            requests: s.requests,
            errors: s.errors,
            meanMs: s.requests === 0 ? 0 : +(s.totalMs / s.requests).toFixed(3),
            maxMs: +s.maxMs.toFixed(3),
          },
        ]),
      ),
    };
  }

  /** Stops taking calls, aborts running handlers' signals, waits (bounded) for them, and leaves. */
  async close(graceMs: number): Promise<void> {
    if (this.#leaving.signal.aborted) return;
    const reason = notServed(this.service);
    this.#leaving.abort(reason);
    this.#running.abortAll(reason);
    if (this.#inFlight > 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, graceMs);
        timer.unref();
        this.#idle.add(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    await Promise.allSettled([this.member?.leave(), this.partitioned?.leave()]);
  }
}

function notServed(service: string): MusterError {
  return new MusterError('MUSTER_NO_INSTANCE', `this node does not serve '${service}' (any more)`, {
    details: { service, ran: false },
  });
}

function codeOf(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : 'error';
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return (
    value !== null &&
    (typeof value === 'object' || typeof value === 'function') &&
    typeof (value as { then?: unknown }).then === 'function'
  );
}
