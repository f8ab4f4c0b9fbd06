/**
 * Discovery for callers: pick a healthy instance from a watched view, and register listeners on the
 * port the OS chose.
 */
import type { AddressInfo, Server } from 'node:net';
import { type Clock, systemClock } from '../clock.js';
import { invalidArgument, MusterError } from '../errors.js';
import type { Store } from '../store/index.js';
import { join, type JoinOptions, type Member } from './member.js';
import { type Instance, isHealthy } from './types.js';
import type { InstanceView } from './watch.js';

/**
 * - `round-robin`: smooth weighted round-robin over healthy instances (weights from the records).
 * - `least-recently-failed`: the healthy instance whose last reported failure is oldest (never failed
 *   first); ties go round-robin.
 */
export type BalanceStrategy = 'round-robin' | 'least-recently-failed';

export interface BalancerOptions {
  /** Default: `round-robin`. */
  strategy?: BalanceStrategy;
  /** Extra filter, e.g. by tag. Default: every healthy instance. */
  filter?: (instance: Instance) => boolean;
  /** Prefer `passing` over `warning` instances when any is passing. Default: true. */
  preferPassing?: boolean;
  clock?: Clock;
}

/**
 * Picks instances of a watched service. Healthy means `active`, not `failing`, and weight > 0.
 * The balancer reads the view's cache: picking never waits on the store.
 */
export class Balancer {
  readonly #view: InstanceView;
  readonly #strategy: BalanceStrategy;
  readonly #filter: (instance: Instance) => boolean;
  readonly #preferPassing: boolean;
  readonly #clock: Clock;
  readonly #current = new Map<string, number>();
  readonly #lastFailure = new Map<string, number>();
  #turn = 0;

  constructor(view: InstanceView, options: BalancerOptions = {}) {
    const strategy = options.strategy ?? 'round-robin';
    if (strategy !== 'round-robin' && strategy !== 'least-recently-failed') {
      throw invalidArgument(
        `strategy must be round-robin or least-recently-failed, got ${JSON.stringify(strategy)}`,
      );
    }
    this.#view = view;
    this.#strategy = strategy;
    this.#filter = options.filter ?? (() => true);
    this.#preferPassing = options.preferPassing ?? true;
    this.#clock = options.clock ?? systemClock;
  }

  /** The instances a pick may return now. */
  candidates(): Instance[] {
    const healthy = this.#view.instances().filter((i) => isHealthy(i) && this.#filter(i));
    if (!this.#preferPassing) return healthy;
    const passing = healthy.filter((i) => i.health === 'passing');
    return passing.length > 0 ? passing : healthy;
  }

  /**
   * Returns a healthy instance. Throws `MUSTER_NO_HEALTHY_INSTANCE` (retryable) when there is none.
   */
  pick(): Instance {
    const candidates = this.candidates();
    if (candidates.length === 0) {
      throw new MusterError(
        'MUSTER_NO_HEALTHY_INSTANCE',
        `service '${this.#view.service}' has no active, healthy instance (${this.#view.size} registered)`,
        { details: { service: this.#view.service, registered: this.#view.size } },
      );
    }
    return this.#strategy === 'round-robin'
      ? this.#weighted(candidates)
      : this.#leastRecentlyFailed(candidates);
  }

  /** Records that a call to `id` failed (used by `least-recently-failed`). */
  reportFailure(id: string): void {
    this.#lastFailure.set(id, this.#clock.monotonic());
  }

  /** Forgets `id`'s failures. */
  reportSuccess(id: string): void {
    this.#lastFailure.delete(id);
  }

  /** Smooth weighted round-robin (each pick: add weights, take the largest, subtract the total). */
  #weighted(candidates: readonly Instance[]): Instance {
    let total = 0;
    let best: Instance | undefined;
    let bestScore = -Infinity;
    const live = new Set<string>();
    for (const inst of candidates) {
      live.add(inst.id);
      const score = (this.#current.get(inst.id) ?? 0) + inst.weight;
      this.#current.set(inst.id, score);
      total += inst.weight;
      if (score > bestScore) {
        bestScore = score;
        best = inst;
      }
    }
    for (const id of this.#current.keys()) if (!live.has(id)) this.#current.delete(id);
    const chosen = best as Instance;
    this.#current.set(chosen.id, bestScore - total);
    return chosen;
  }

  #leastRecentlyFailed(candidates: readonly Instance[]): Instance {
    let oldest = Infinity;
    let pool: Instance[] = [];
    for (const inst of candidates) {
      const t = this.#lastFailure.get(inst.id) ?? -Infinity;
      if (t < oldest) {
        oldest = t;
        pool = [inst];
      } else if (t === oldest) pool.push(inst);
    }
    return pool[this.#turn++ % pool.length] as Instance;
  }
}

export interface ListenAndJoinOptions extends Omit<JoinOptions, 'address'> {
  /** Interface to bind and advertise. Default: 127.0.0.1. */
  host?: string;
  /** Port to bind; 0 lets the OS choose. Default: 0. */
  port?: number;
  /** Host name to advertise instead of `host` (e.g. the machine's name when binding 0.0.0.0). */
  advertiseHost?: string;
}

/**
 * Starts `server` listening (on port 0 by default) and joins `options.service` with the address the
 * OS gave it, so callers find the dynamic port through discovery. On a join failure the server is
 * closed again. Throws the listen error (`EADDRINUSE`…) or the join's coded errors.
 */
export async function listenAndJoin(
  store: Store,
  server: Server,
  options: ListenAndJoinOptions,
): Promise<Member> {
  const host = options.host ?? '127.0.0.1';
  const port = options.port ?? 0;
  if (!Number.isInteger(port) || port < 0 || port > 65535)
    throw invalidArgument(`port must be 0–65535, got ${port}`);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const bound = server.address() as AddressInfo;
  const advertised =
    options.advertiseHost ?? (bound.family === 'IPv6' ? `[${bound.address}]` : bound.address);
  try {
    const { host: _h, port: _p, advertiseHost: _a, ...joinOptions } = options;
    return await join(store, { ...joinOptions, address: `${advertised}:${bound.port}` });
  } catch (err) {
    await new Promise<void>((resolve) => server.close(() => resolve()));
    throw err;
  }
}
