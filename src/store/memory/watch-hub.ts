/**
 * Watch delivery for the memory engine.
 *
 * Watchers are indexed so that a write never scans every watcher: prefix watchers by prefix (only the
 * prefix lengths that some watcher uses are probed), single-key watchers by key; only explicit
 * `[start, end)` range watchers are scanned, and those are rare.
 */
import { onAbort } from '../../util/abort.js';
import { inRange, type Range } from '../keys.js';
import type { Watch, WatchBatch, WatchEvent } from '../types.js';
import { WatchQueue } from '../watch-queue.js';

/** One change of a committed revision, as the hub receives it. */
export interface CommittedEvent {
  readonly event: WatchEvent; // with `prev` filled in when known
  /** The same event without `prev`, shared by every watcher that did not ask for it. */
  readonly bare: WatchEvent;
}

/** One watcher of the memory engine: its range, and the queue of batches not yet consumed. */
export class MemoryWatch implements Watch {
  readonly range: Range;
  readonly prevKv: boolean;
  // Handed over on the next microtask so that further events of the same revision join the batch.
  readonly #queue = new WatchQueue({ deferHandoff: true, onEnd: () => this.#onEnd() });
  #lastRev = 0;
  readonly #onClose: (w: MemoryWatch) => void;
  readonly #onProgress: (w: MemoryWatch) => void;
  /** Stops listening to the watch's signal; unset until the constructor has run. */
  #offAbort: (() => void) | undefined;

  constructor(
    range: Range,
    prevKv: boolean,
    signal: AbortSignal | undefined,
    hooks: { onClose: (w: MemoryWatch) => void; onProgress: (w: MemoryWatch) => void },
  ) {
    this.range = range;
    this.prevKv = prevKv;
    this.#onClose = hooks.onClose;
    this.#onProgress = hooks.onProgress;
    this.#offAbort = onAbort(signal, () => this.close());
  }

  get ended(): boolean {
    return this.#queue.ended;
  }

  /** Appends one event of revision `rev` (events of one revision share a batch). */
  pushEvent(rev: number, committed: CommittedEvent): void {
    if (this.#queue.ended) return;
    const event = this.prevKv ? committed.event : committed.bare;
    const last = this.#queue.last;
    if (this.#lastRev === rev && last !== undefined && last.type === 'events') {
      (last.events as WatchEvent[]).push(event);
      return;
    }
    this.#lastRev = rev;
    this.#queue.push({ type: 'events', revision: rev, events: [event] });
  }

  pushProgress(rev: number): void {
    this.#queue.push({ type: 'progress', revision: rev });
  }

  /** Ends the watch with an error (after already queued batches are consumed). */
  fail(error: unknown): void {
    this.#queue.fail(error instanceof Error ? error : new Error(String(error)));
  }

  requestProgress(): void {
    if (!this.#queue.ended) this.#onProgress(this);
  }

  close(): void {
    this.#queue.close();
  }

  #onEnd(): void {
    this.#offAbort?.();
    this.#onClose(this);
  }

  [Symbol.asyncIterator](): AsyncIterator<WatchBatch> {
    return this.#queue;
  }

  /** Batches queued and not yet consumed. */
  get pending(): number {
    return this.#queue.pending;
  }
}

/** The registry of live watchers and the fan-out of committed revisions to them. */
export class WatchHub {
  readonly #byPrefix = new Map<string, Set<MemoryWatch>>();
  readonly #prefixLengths = new Map<number, number>();
  readonly #byKey = new Map<string, Set<MemoryWatch>>();
  readonly #ranges = new Set<MemoryWatch>();
  #count = 0;

  get size(): number {
    return this.#count;
  }

  add(w: MemoryWatch): void {
    this.#count++;
    const r = w.range;
    if (r.kind === 'prefix') {
      addTo(this.#byPrefix, r.prefix, w);
      this.#prefixLengths.set(r.prefix.length, (this.#prefixLengths.get(r.prefix.length) ?? 0) + 1);
    } else if (r.kind === 'key') {
      addTo(this.#byKey, r.key, w);
    } else {
      this.#ranges.add(w);
    }
  }

  remove(w: MemoryWatch): void {
    const r = w.range;
    let removed = false;
    if (r.kind === 'prefix') {
      removed = removeFrom(this.#byPrefix, r.prefix, w);
      if (removed) {
        const n = (this.#prefixLengths.get(r.prefix.length) ?? 1) - 1;
        if (n === 0) this.#prefixLengths.delete(r.prefix.length);
        else this.#prefixLengths.set(r.prefix.length, n);
      }
    } else if (r.kind === 'key') {
      removed = removeFrom(this.#byKey, r.key, w);
    } else {
      removed = this.#ranges.delete(w);
    }
    if (removed) this.#count--;
  }

  /**
   * A new watcher of `range`, not yet registered (see {@link add}); `progressRevision` is the revision
   * up to which everything is already queued for it when it asks for progress.
   */
  create(
    range: Range,
    options: { prevKv?: boolean; signal?: AbortSignal },
    progressRevision: () => number,
  ): MemoryWatch {
    return new MemoryWatch(range, options.prevKv === true, options.signal, {
      onClose: (w) => this.remove(w),
      onProgress: (w) => w.pushProgress(progressRevision()),
    });
  }

  /** Delivers every event of revision `rev`, in order, to the watchers whose range holds its key. */
  publish(rev: number, events: readonly CommittedEvent[]): void {
    if (this.#count === 0) return;
    for (const committed of events) {
      const key = committed.event.kv.key;
      for (const len of this.#prefixLengths.keys()) {
        if (len > key.length) continue;
        const set = this.#byPrefix.get(len === key.length ? key : key.slice(0, len));
        if (set !== undefined) for (const w of set) w.pushEvent(rev, committed);
      }
      const exact = this.#byKey.get(key);
      if (exact !== undefined) for (const w of exact) w.pushEvent(rev, committed);
      for (const w of this.#ranges) if (inRange(w.range, key)) w.pushEvent(rev, committed);
    }
  }

  /** Ends every watcher with `error`. */
  failAll(error: unknown): void {
    const all = [...this.#byPrefix.values(), ...this.#byKey.values(), this.#ranges].flatMap((s) => [...s]);
    for (const w of all) w.fail(error);
  }
}

function addTo(map: Map<string, Set<MemoryWatch>>, k: string, w: MemoryWatch): void {
  let set = map.get(k);
  if (set === undefined) map.set(k, (set = new Set()));
  set.add(w);
}

function removeFrom(map: Map<string, Set<MemoryWatch>>, k: string, w: MemoryWatch): boolean {
  const set = map.get(k);
  if (set === undefined || !set.delete(w)) return false;
  if (set.size === 0) map.delete(k);
  return true;
}
