/**
 * Held requests (the seed's "Restarts of Tornado without connection drops"): GET and HEAD requests
 * whose destination is unavailable wait in a queue per destination for up to `hold.timeout`, and are
 * released at a bounded rate per backend once the destination resolves to a backend that is not
 * known to refuse connections. The queue never waits on the store: it re-reads the routing table
 * when the table changes and when a refusing backend's probe interval has passed.
 */
import type { Clock, TimerHandle } from '../clock.js';
import type { HoldSettings } from './config.js';
import type { Resolution } from './table.js';

/** One held request, as the queue sees it. */
export interface Held {
  key: string;
  destination: string;
  /** Monotonic ms when it was first held. */
  heldAt: number;
  /** The owner (partition + fencing token) that answered 421 "not the owner": wait for another. */
  avoid?: { readonly partition: string; readonly token: number } | undefined;
  /** Set by the queue. */
  timer?: TimerHandle | undefined;
  queued?: boolean;
}

export interface HoldQueueHooks<T extends Held> {
  resolve(key: string): Resolution;
  /** Try the request again (it left the queue). */
  release(item: T): void;
  /** The hold timed out (it left the queue). */
  expire(item: T): void;
}

export type HoldOutcome = 'held' | 'full';

/** Per-backend token bucket: `rate` per second, bursts of up to a tenth of a second's worth. */
interface Bucket {
  tokens: number;
  at: number;
}

export class HoldQueues<T extends Held> {
  readonly #settings: HoldSettings;
  readonly #clock: Clock;
  readonly #hooks: HoldQueueHooks<T>;
  readonly #queues = new Map<string, T[]>();
  readonly #buckets = new Map<string, Bucket>();
  readonly #downUntil = new Map<string, number>();
  #total = 0;
  #timer: TimerHandle | undefined;
  #timerAt = Infinity;

  constructor(settings: HoldSettings, clock: Clock, hooks: HoldQueueHooks<T>) {
    this.#settings = settings;
    this.#clock = clock;
    this.#hooks = hooks;
  }

  /** Requests held now. */
  get size(): number {
    return this.#total;
  }

  /** Held requests per destination. */
  sizes(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [d, q] of this.#queues) if (q.length > 0) out[d] = q.length;
    return out;
  }

  /** The backend origins this queue keeps state for (a release budget being spent, or a down mark). */
  get tracked(): string[] {
    return [...new Set([...this.#buckets.keys(), ...this.#downUntil.keys()])].sort();
  }

  /** True when `origin` refused a connection less than a probe interval ago. */
  isDown(origin: string): boolean {
    const until = this.#downUntil.get(origin);
    if (until === undefined) return false;
    if (until > this.#clock.monotonic()) return true;
    this.#downUntil.delete(origin);
    return false;
  }

  /** Records that `origin` refused or dropped a connection: no release to it for a probe interval. */
  markDown(origin: string): void {
    const until = this.#clock.monotonic() + this.#settings.probeIntervalMs;
    this.#downUntil.set(origin, until);
    this.#wakeAt(until);
  }

  /**
   * Holds `item`. A new one: the caps apply and its deadline starts (`heldAt` + `hold.timeout`). `front`:
   * a released request that failed again — it takes its place by `heldAt` again and keeps its
   * deadline (one that passed while it was out expires at once).
   */
  add(item: T, front = false): HoldOutcome {
    if (!front) {
      const q = this.#queues.get(item.destination);
      if (this.#total >= this.#settings.maxTotal || (q?.length ?? 0) >= this.#settings.maxPerDestination) {
        return 'full';
      }
      this.#arm(item);
    } else if (item.timer === undefined) {
      // its deadline fired while it was out being tried
      this.#arm(item);
    }
    this.#insert(item);
    this.#total++;
    this.#wakeAt(this.#clock.monotonic());
    return 'held';
  }

  /** The timer of `item`'s deadline: it leaves the queue and expires (if it is in the queue then). */
  #arm(item: T): void {
    const left = item.heldAt + this.#settings.timeoutMs - this.#clock.monotonic();
    item.timer = this.#clock.setTimeout(
      () => {
        item.timer = undefined;
        if (this.remove(item)) this.#hooks.expire(item);
      },
      Math.max(0, left),
    );
  }

  /** Puts `item` in its destination's queue, ordered by `heldAt` (the oldest first). */
  #insert(item: T): void {
    let q = this.#queues.get(item.destination);
    if (q === undefined) this.#queues.set(item.destination, (q = []));
    let i = q.length;
    while (i > 0 && (q[i - 1] as T).heldAt > item.heldAt) i--;
    q.splice(i, 0, item);
    item.queued = true;
  }

  /** Takes `item` out of its queue (client gone, timeout); false when it was not queued. */
  remove(item: T): boolean {
    if (item.queued !== true) return false;
    const q = this.#queues.get(item.destination);
    const i = q === undefined ? -1 : q.indexOf(item);
    if (q === undefined || i < 0) return false;
    q.splice(i, 1);
    if (q.length === 0) this.#queues.delete(item.destination);
    item.queued = false;
    this.#total--;
    return true;
  }

  /** Stops the timeout of a request that is done for good. */
  finish(item: T): void {
    if (item.timer !== undefined) this.#clock.clearTimeout(item.timer);
    item.timer = undefined;
  }

  /** The routing table changed: look again now. */
  poke(): void {
    if (this.#total > 0) this.#wakeAt(this.#clock.monotonic());
  }

  /** Every held request, for draining or closing. */
  *all(): IterableIterator<T> {
    for (const q of this.#queues.values()) yield* q;
  }

  close(): void {
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #wakeAt(at: number): void {
    if (this.#timer !== undefined && this.#timerAt <= at) return;
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    this.#timerAt = at;
    this.#timer = this.#clock.setTimeout(() => {
      this.#timer = undefined;
      this.#timerAt = Infinity;
      this.#pump();
    }, at - this.#clock.monotonic());
  }

  #pump(): void {
    const now = this.#clock.monotonic();
    const rate = this.#settings.releaseRate;
    const burst = Math.max(1, rate / 10);
    // what no longer says anything goes, so backends that left leave no entry: a bucket refilled to
    // its burst (a new one starts full), a down mark past its end (markDown woke us for it)
    for (const [origin, b] of this.#buckets)
      if (b.tokens + ((now - b.at) * rate) / 1000 >= burst) this.#buckets.delete(origin);
    for (const [origin, until] of this.#downUntil) if (until <= now) this.#downUntil.delete(origin);
    const resolved = new Map<string, Resolution>();
    const resolve = (key: string): Resolution => {
      let r = resolved.get(key);
      if (r === undefined) resolved.set(key, (r = this.#hooks.resolve(key)));
      return r;
    };
    // Each held request waits where its own key goes now: a queue holds requests of several keys
    // (every key of a partition, or every key while there is no spec), and a change moves only those
    // whose destination changed.
    for (const [destination, q] of [...this.#queues]) {
      const stay: T[] = [];
      const moving: T[] = [];
      for (const item of q) (resolve(item.key).destination === destination ? stay : moving).push(item);
      if (moving.length === 0) continue;
      if (stay.length > 0) this.#queues.set(destination, stay);
      else this.#queues.delete(destination);
      for (const item of moving) {
        item.destination = resolve(item.key).destination;
        this.#insert(item);
      }
    }
    let next = Infinity;
    for (const [destination, q] of [...this.#queues]) {
      const first = q[0];
      if (first === undefined) continue;
      const r = resolve(first.key);
      // not resolvable yet: the table's change wakes us
      if (!r.ok) continue;
      const until = this.#downUntil.get(r.origin);
      if (until !== undefined && until > now) {
        next = Math.min(next, until);
        continue;
      }
      let b = this.#buckets.get(r.origin);
      if (b === undefined) this.#buckets.set(r.origin, (b = { tokens: burst, at: now }));
      b.tokens = Math.min(burst, b.tokens + ((now - b.at) * rate) / 1000);
      b.at = now;
      const batch: T[] = [];
      const waiting: T[] = [];
      let due = false;
      for (const item of q) {
        // the owner that said it is not the owner any more: wait for the table to show the next one
        const avoid = item.avoid;
        if (avoid !== undefined && avoid.partition === r.partition && avoid.token === r.token) {
          waiting.push(item);
        } else if (b.tokens >= 1) {
          b.tokens -= 1;
          item.queued = false;
          this.#total--;
          batch.push(item);
        } else {
          waiting.push(item);
          due = true;
        }
      }
      if (waiting.length === 0) this.#queues.delete(destination);
      else this.#queues.set(destination, waiting);
      if (due) next = Math.min(next, now + ((1 - b.tokens) * 1000) / rate);
      for (const item of batch) this.#hooks.release(item);
    }
    if (next < Infinity) this.#wakeAt(next);
  }
}
