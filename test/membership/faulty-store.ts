/**
 * Fault injection at the Store port, for deterministic unit tests on the memory engine with a
 * ManualClock: keep-alives can be black-holed or delayed, and open watches can be broken. The same
 * faults are injected for real (fault proxy, kill -9) in the etcd suites.
 */
import type { Clock } from '../../src/clock.js';
import { MusterError } from '../../src/errors.js';
import type { MemoryStore } from '../../src/store/index.js';
import type { KeySelector, Store, Watch, WatchBatch, WatchOptions } from '../../src/store/types.js';

export class FaultyStore implements Store {
  readonly url: string;
  /** Keep-alives never reach the store (they hang until aborted). */
  blackholeKeepAlives = false;
  /** Keep-alives reach the store only after this long (ms of the clock). */
  keepAliveDelayMs = 0;
  keepAliveCalls = 0;
  /** Clock time at which the last acknowledged keep-alive was sent. */
  lastAckedSentAt: number | undefined;
  readonly #inner: MemoryStore;
  readonly #clock: Clock;
  readonly #breakers = new Set<(err: Error) => void>();

  constructor(inner: MemoryStore, clock: Clock) {
    this.#inner = inner;
    this.#clock = clock;
    this.url = inner.url;
  }

  get inner(): MemoryStore {
    return this.#inner;
  }

  /** Makes every open watch throw `err` (as a dropped connection or a compaction would). */
  breakWatches(err: Error = new MusterError('MUSTER_UNAVAILABLE', 'connection lost')): void {
    for (const b of [...this.#breakers]) b(err);
  }

  get: Store['get'] = (k, o) => this.#inner.get(k, o);
  range: Store['range'] = (s, o) => this.#inner.range(s, o);
  put: Store['put'] = (k, v, o) => this.#inner.put(k, v, o);
  delete: Store['delete'] = (s, o) => this.#inner.delete(s, o);
  txn: Store['txn'] = (c, s, f, o) => this.#inner.txn(c, s, f, o);
  compact: Store['compact'] = (r) => this.#inner.compact(r);
  headRevision: Store['headRevision'] = (o) => this.#inner.headRevision(o);
  grantLease: Store['grantLease'] = (t, o) => this.#inner.grantLease(t, o);
  revokeLease: Store['revokeLease'] = (id, o) => this.#inner.revokeLease(id, o);
  leaseTimeToLive: Store['leaseTimeToLive'] = (id, o) => this.#inner.leaseTimeToLive(id, o);

  async keepAlive(id: string, options: { signal?: AbortSignal } = {}): Promise<number> {
    this.keepAliveCalls++;
    const sentAt = this.#clock.monotonic();
    if (this.blackholeKeepAlives) {
      return new Promise<number>((_, reject) => {
        options.signal?.addEventListener(
          'abort',
          () => reject(new MusterError('MUSTER_ABORTED', 'aborted')),
          {
            once: true,
          },
        );
      });
    }
    if (this.keepAliveDelayMs > 0) await this.#clock.sleep(this.keepAliveDelayMs);
    const ttl = await this.#inner.keepAlive(id, options);
    this.lastAckedSentAt = sentAt;
    return ttl;
  }

  watch(selector: string | KeySelector, options: WatchOptions = {}): Watch {
    const inner = this.#inner.watch(selector, options);
    const breakers = this.#breakers;
    let breakWith: ((err: Error) => void) | undefined;
    const broken = new Promise<never>((_, reject) => (breakWith = reject));
    broken.catch(() => undefined);
    const breaker = (err: Error): void => {
      breakWith?.(err);
      inner.close();
    };
    breakers.add(breaker);
    return {
      requestProgress: () => inner.requestProgress(),
      close: () => {
        breakers.delete(breaker);
        inner.close();
      },
      async *[Symbol.asyncIterator](): AsyncIterator<WatchBatch> {
        const it = inner[Symbol.asyncIterator]();
        try {
          for (;;) {
            const r = await Promise.race([it.next(), broken]);
            if (r.done === true) return;
            yield r.value;
          }
        } finally {
          breakers.delete(breaker);
        }
      },
    };
  }

  close(): Promise<void> {
    return this.#inner.close();
  }
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
