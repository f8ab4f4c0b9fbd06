/**
 * A fault-injecting wrapper around a real store (the memory engine) for unit tests driven by a
 * ManualClock: `pause()` makes every call and watch delivery hang until `resume()`, as a SIGSTOPped
 * store would; `muteWatches()` silently stops watch deliveries while calls still work.
 */
import type { KeySelector, Store, Watch, WatchBatch, WatchOptions } from '../../src/store/types.js';

export class FaultyStore {
  paused = false;
  muted = false;
  #waiters: (() => void)[] = [];

  constructor(readonly inner: Store) {}

  pause(): void {
    this.paused = true;
  }
  resume(): void {
    this.paused = false;
    this.muted = false;
    for (const w of this.#waiters.splice(0)) w();
  }
  muteWatches(): void {
    this.muted = true;
  }

  #gate(signal?: AbortSignal): Promise<void> {
    if (!this.paused) return Promise.resolve();
    return new Promise((resolve, reject) => {
      this.#waiters.push(resolve);
      signal?.addEventListener('abort', () => reject(new Error('aborted while paused')), { once: true });
    });
  }

  /** The wrapped store, with gates on reads, head reads and watches. */
  get store(): Store {
    const gate = (signal?: AbortSignal): Promise<void> => this.#gate(signal);
    const watch = (selector: string | KeySelector, options?: WatchOptions): Watch =>
      this.#watch(selector, options);
    return new Proxy(this.inner, {
      get(target, prop, receiver) {
        if (prop === 'range' || prop === 'get' || prop === 'headRevision' || prop === 'txn') {
          return async (...args: unknown[]) => {
            const opts = args.find((a) => a !== null && typeof a === 'object' && 'signal' in a) as
              { signal?: AbortSignal } | undefined;
            await gate(opts?.signal);
            return (Reflect.get(target, prop, receiver) as (...a: unknown[]) => unknown).apply(target, args);
          };
        }
        if (prop === 'watch') {
          return watch;
        }
        return Reflect.get(target, prop, receiver) as unknown;
      },
    });
  }

  #watch(selector: string | KeySelector, options?: WatchOptions): Watch {
    const inner = this.inner.watch(selector, options);
    const blocked = (): boolean => this.muted || this.paused;
    const muted = (): boolean => this.muted;
    const gate = (): Promise<void> => this.#gate();
    return {
      requestProgress(): void {
        // Lost while paused or muted, as over a black-holed connection.
        if (!blocked()) inner.requestProgress();
      },
      close(): void {
        inner.close();
      },
      async *[Symbol.asyncIterator](): AsyncIterator<WatchBatch> {
        for await (const batch of inner) {
          if (muted()) continue;
          await gate();
          yield batch;
        }
      },
    };
  }
}
