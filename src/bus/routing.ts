/**
 * Keyed, fenced calls: key → partition (the service's spec and placement's stable key hash) → the
 * partition's current owner (the watched ownership view) → a call that carries the owner's fencing
 * token as this node sees it. The receiver runs it only if the token is its own and its ownership is
 * still valid; otherwise it answers `MUSTER_NOT_OWNER` (with its own token) and nothing ran, so the
 * caller waits for its view to catch up and tries again — safe even for non-idempotent calls.
 * While a partition has no owner (mid hand-off) or its owner is `moving`, calls are held, bounded by
 * their deadline and by `maxHeldCalls`.
 */
import { abortedError, isMusterError, MusterError } from '../errors.js';
import { onAbort } from '../util/abort.js';
import { openServiceView, partitionIds, type ServiceViewHandle } from '../partitions/index.js';
import { partitionForKey } from '../placement/index.js';
import type { Bus } from './bus.js';
import { noInstance } from './bus-errors.js';
import type { CallOptions, ResolvedBusOptions } from './types.js';

/** 50 ms: re-check a held call at least this often (a down peer may come back, a view may lag). */
const HOLD_POLL_MS = 50;

export class KeyedRouter {
  readonly #bus: Bus;
  readonly #o: ResolvedBusOptions;
  readonly #views = new Map<string, ServiceViewHandle>();
  #held = 0;

  constructor(bus: Bus, o: ResolvedBusOptions) {
    this.#bus = bus;
    this.#o = o;
  }

  /** Calls held right now. */
  get held(): number {
    return this.#held;
  }

  async #view(service: string, signal: AbortSignal | undefined): Promise<ServiceViewHandle> {
    let view = this.#views.get(service);
    if (view === undefined) {
      view = openServiceView(this.#bus.store, service, {
        clock: this.#o.clock,
        ...(this.#bus.root === undefined ? {} : { root: this.#bus.root }),
      });
      this.#views.set(service, view);
    }
    await view.ready(signal === undefined ? {} : { signal });
    return view;
  }

  async call(
    service: string,
    method: string,
    args: unknown,
    key: string,
    deadline: number,
    options: CallOptions,
  ): Promise<unknown> {
    const view = await this.#view(service, options.signal);
    const clock = this.#o.clock;
    let partition: string | undefined;
    for (;;) {
      const left = deadline - clock.monotonic();
      if (left <= 0) {
        throw new MusterError(
          'MUSTER_TIMEOUT',
          `${service}.${method} for key ${JSON.stringify(key)} (partition ${partition ?? '?'}) did not complete in time`,
          { details: { service, method, partition, key } },
        );
      }
      const spec = view.spec;
      if (spec === undefined) {
        if (view.instances.size === 0) throw noInstance(service, 0);
        await this.#hold(view, left, options.signal);
        continue;
      }
      const ids = partitionIds(spec.partitions);
      if (ids.length === 0) throw noInstance(service, view.instances.size);
      const p = ids[partitionForKey(key, ids.length, spec.settings?.seed ?? 0)] as string;
      partition = p;
      const dest = view.destination(p);
      if (dest === undefined || dest.moving) {
        // Mid hand-off (no owner yet) or the owner announced a move: hold the call.
        if (view.instances.size === 0) throw noInstance(service, 0);
        await this.#hold(view, left, options.signal);
        continue;
      }
      const address = dest.address;
      if (address === null || this.#bus.isDown(address)) {
        await this.#hold(view, left, options.signal);
        continue;
      }
      try {
        return await this.#bus.request(
          address,
          { s: service, m: method, a: args, p, t: dest.token },
          left,
          options.signal,
        );
      } catch (err) {
        if (!isMusterError(err)) throw err;
        const nothingRan = err.details.sent === false || err.details.ran === false;
        if (
          err.code === 'MUSTER_FRAME_TOO_LARGE' ||
          err.code === 'MUSTER_OVERLOADED' ||
          err.code === 'MUSTER_INVALID_ARGUMENT'
        )
          throw err;
        if (nothingRan || (options.idempotent === true && err.code === 'MUSTER_PEER_LOST')) {
          // Not the owner (or not any more), not reachable, or not serving: wait for the view to move.
          await this.#hold(view, Math.min(left, HOLD_POLL_MS), options.signal);
          continue;
        }
        throw err;
      }
    }
  }

  /** Waits for the next change of the view, at most `ms` (capped by the poll period). */
  async #hold(view: ServiceViewHandle, ms: number, signal: AbortSignal | undefined): Promise<void> {
    if (signal?.aborted) throw abortedError(signal);
    if (this.#held >= this.#o.maxHeldCalls) {
      throw new MusterError(
        'MUSTER_OVERLOADED',
        `${this.#held} keyed calls are already held waiting for owners (maxHeldCalls ${this.#o.maxHeldCalls})`,
        { details: { held: this.#held, sent: false } },
      );
    }
    this.#held++;
    try {
      await new Promise<void>((resolve, reject) => {
        let off = (): void => undefined;
        const done = (): void => {
          this.#o.clock.clearTimeout(timer);
          unsubscribe();
          off();
        };
        const timer = this.#o.clock.setTimeout(
          () => {
            done();
            resolve();
          },
          Math.min(ms, HOLD_POLL_MS),
        );
        const unsubscribe = view.subscribe(() => {
          done();
          resolve();
        });
        off = onAbort(signal, () => {
          done();
          reject(abortedError(signal as AbortSignal));
        });
      });
    } finally {
      this.#held--;
    }
  }

  close(): void {
    for (const v of this.#views.values()) v.close();
    this.#views.clear();
  }
}
