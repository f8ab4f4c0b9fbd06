/**
 * Publishes a proxy's held queue sizes where the dashboard (its watched `status/` prefix) sees them:
 * `status/<service>/proxies/<id>` → {@link ProxyRecord}, under the proxy's own session lease, so
 * the record goes away with the proxy. Cheap by construction: while requests are held the sizes are
 * read from memory every {@link HELD_PUBLISH_INTERVAL_MS} and written only when they changed (at most
 * four writes a second, however many requests are held); once the record says nothing is held, the
 * publisher sleeps — no timer — until a request is held again (`changes`) or its session is lost (the
 * record must be written again under a new lease). An idle proxy writes once, at start, and never
 * wakes for it.
 */
import { hostname } from 'node:os';
import { type Clock, systemClock, type TimerHandle } from '../clock.js';
import { openSession, serviceKeys, type Session } from '../membership/index.js';
import type { Store } from '../store/index.js';
import { onAbort } from '../util/abort.js';

/** 250 ms: a queue's growth shows on the dashboard within a quarter second; ≤ 4 writes/s per proxy. */
export const HELD_PUBLISH_INTERVAL_MS = 250;
/**
 * 5 s: after a failed write or session (store unreachable, or this worker too busy to keep its lease —
 * `grantLease` past its deadline under saturation), wait this long, doubling on each failure in a row
 * up to {@link HELD_PUBLISH_MAX_RETRY_MS}: a saturated worker is not asked for more store calls.
 */
export const HELD_PUBLISH_RETRY_MS = 5_000;
/**
 * 10 s: the lease of a proxy's record. The record only informs the dashboard, so a crashed worker's
 * may linger 10 s; in exchange the lease is renewed every ~3.3 s instead of every second (the
 * 3 s default of member sessions, which must notice a dead owner fast) — an idle worker's one
 * remaining periodic store call.
 */
export const HELD_PUBLISH_SESSION_TTL_MS = 10_000;
/** 60 s: the longest wait between tries; a failure streak is logged once, then at most once a minute. */
export const HELD_PUBLISH_MAX_RETRY_MS = 60_000;

/** What a proxy publishes about itself. */
export interface ProxyRecord {
  readonly id: string;
  readonly pid: number;
  /** Held requests per destination (`partition:<p>`, `instance:<id>`); only non-empty queues. */
  readonly held: Record<string, number>;
  readonly total: number;
  /** Wall-clock ms of the change this record shows. */
  readonly at: number;
}

export interface HeldPublisherOptions {
  readonly store: Store;
  readonly root: string;
  readonly service: string;
  /** Default `<hostname>-<pid>`. */
  readonly id?: string;
  readonly sizes: () => Record<string, number>;
  /**
   * Subscribes to "a request was held" (the sizes may have changed from nothing held); returns an
   * unsubscribe function. Without it the publisher reads the sizes every interval, held or not.
   */
  readonly changes?: (listener: () => void) => () => void;
  readonly clock?: Clock;
  readonly onError?: (err: unknown) => void;
}

/**
 * The key of a proxy's record: `<root>status/<service>/proxies/<id>`, outside the service's watched
 * prefix (every agent and proxy watches `services/<service>/`; none of them reads this record).
 */
export function proxyRecordKey(root: string, service: string, id: string): string {
  return serviceKeys(root, service).proxy(id);
}

/** Decodes a proxy record; undefined when malformed. */
export function parseProxyRecord(value: Uint8Array | string): ProxyRecord | undefined {
  try {
    const text = typeof value === 'string' ? value : Buffer.from(value).toString('utf8');
    const r = JSON.parse(text) as Partial<ProxyRecord>;
    if (typeof r.id !== 'string' || typeof r.held !== 'object' || r.held === null) return undefined;
    return {
      id: r.id,
      pid: Number(r.pid),
      held: r.held,
      total: Number(r.total) || 0,
      at: Number(r.at) || 0,
    };
  } catch {
    return undefined;
  }
}

export class HeldPublisher {
  readonly #o: HeldPublisherOptions;
  readonly #clock: Clock;
  readonly #key: string;
  readonly #id: string;
  #session: Session | undefined;
  #last: string | undefined;
  #timer: TimerHandle | undefined;
  #busy = false;
  #closed = false;
  /** Asleep: the record says nothing is held and nothing is; a change or a lost session wakes it. */
  #asleep = false;
  /** Woken during a tick: that tick's reading may predate the change, so it must not sleep. */
  #woken = false;
  readonly #unsubscribe: (() => void) | undefined;
  /** Failures in a row, and when the streak was last reported (monotonic ms). */
  #failures = 0;
  #reportedAt = -Infinity;

  constructor(options: HeldPublisherOptions) {
    this.#o = options;
    this.#clock = options.clock ?? systemClock;
    this.#id = options.id ?? `${hostname()}-${process.pid}`;
    this.#key = proxyRecordKey(options.root, options.service, this.#id);
    this.#unsubscribe = options.changes?.(() => this.#wake());
    this.#schedule(0);
  }

  /** A request was held, or the session was lost: publish soon, whatever the publisher was doing. */
  #wake(): void {
    this.#woken = true;
    if (!this.#asleep || this.#closed) return;
    this.#asleep = false;
    this.#schedule(0);
  }

  #schedule(ms: number): void {
    if (this.#closed) return;
    this.#timer = this.#clock.setTimeout(() => void this.#tick(), ms);
  }

  async #tick(): Promise<void> {
    if (this.#busy || this.#closed) return;
    this.#busy = true;
    this.#woken = false;
    let next = HELD_PUBLISH_INTERVAL_MS;
    try {
      const held = this.#o.sizes();
      const text = JSON.stringify(held);
      if (text !== this.#last || this.#session === undefined || this.#session.lost.aborted) {
        if (this.#session === undefined || this.#session.lost.aborted) {
          // the lost one's keep-alive loop and lease go (best effort: the store may be unreachable)
          void this.#session?.close().catch(() => undefined);
          this.#session = undefined;
          const session = await openSession(this.#o.store, {
            clock: this.#clock,
            ttl: HELD_PUBLISH_SESSION_TTL_MS,
          });
          if (this.#closed) {
            await session.close();
            return;
          }
          this.#session = session;
          onAbort(session.lost, () => this.#wake()); // (the session ends with its signal: nothing to remove)
          this.#last = undefined; // a new lease: write again
        }
        if (text !== this.#last) {
          let total = 0;
          for (const n of Object.values(held)) total += n;
          const record: ProxyRecord = { id: this.#id, pid: process.pid, held, total, at: this.#clock.now() };
          await this.#o.store.put(this.#key, JSON.stringify(record), { lease: this.#session.leaseId });
          this.#last = text;
        }
      }
      this.#failures = 0;
      // nothing held, and the record says so: sleep until a request is held or the session is lost
      if (this.#o.changes !== undefined && text === '{}' && this.#last === text && !this.#woken) next = -1;
    } catch (err) {
      this.#failures++;
      next = Math.min(HELD_PUBLISH_MAX_RETRY_MS, HELD_PUBLISH_RETRY_MS * 2 ** (this.#failures - 1));
      const now = this.#clock.monotonic();
      if (this.#failures === 1 || now - this.#reportedAt >= HELD_PUBLISH_MAX_RETRY_MS) {
        this.#reportedAt = now;
        this.#o.onError?.(err);
      }
    } finally {
      this.#busy = false;
      if (next >= 0) this.#schedule(next);
      else this.#asleep = true;
    }
  }

  /** Stops publishing and ends the lease (the record is deleted). Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#unsubscribe?.();
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    await this.#session?.close().catch(() => undefined);
  }
}
