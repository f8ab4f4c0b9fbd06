/**
 * A small typed event emitter for fan-out. A listener that throws never corrupts the emitter's
 * owner: the error is passed to `onListenerError` (default: printed as a warning) and the other
 * listeners still run.
 */

/** A listener map: event name → listener argument tuple. */
export type EventMap = Record<string, unknown[]>;

/** Subscribe-only view of an emitter, for public surfaces. */
export interface Listenable<E extends EventMap> {
  /** Adds a listener; returns a function that removes it. */
  on<K extends keyof E>(event: K, listener: (...args: E[K]) => void): () => void;
  /** Adds a listener that runs at most once; returns a function that removes it. */
  once<K extends keyof E>(event: K, listener: (...args: E[K]) => void): () => void;
  off<K extends keyof E>(event: K, listener: (...args: E[K]) => void): void;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyListener = (...args: any[]) => void;

export class Emitter<E extends EventMap> implements Listenable<E> {
  readonly #listeners = new Map<keyof E, Set<AnyListener>>();
  readonly #onListenerError: (err: unknown, event: keyof E) => void;

  constructor(onListenerError?: (err: unknown, event: keyof E) => void) {
    this.#onListenerError =
      onListenerError ??
      ((err, event) => process.emitWarning(`listener for '${String(event)}' threw: ${String(err)}`));
  }

  on<K extends keyof E>(event: K, listener: (...args: E[K]) => void): () => void {
    let set = this.#listeners.get(event);
    if (set === undefined) this.#listeners.set(event, (set = new Set()));
    set.add(listener);
    return () => this.off(event, listener);
  }

  once<K extends keyof E>(event: K, listener: (...args: E[K]) => void): () => void {
    const off = this.on(event, (...args: E[K]) => {
      off();
      listener(...args);
    });
    return off;
  }

  off<K extends keyof E>(event: K, listener: (...args: E[K]) => void): void {
    this.#listeners.get(event)?.delete(listener);
  }

  /** Calls every listener of `event` in registration order; returns how many ran. */
  emit<K extends keyof E>(event: K, ...args: E[K]): number {
    const set = this.#listeners.get(event);
    if (set === undefined) return 0;
    let n = 0;
    for (const listener of [...set]) {
      n++;
      try {
        (listener as unknown as (...a: E[K]) => void)(...args);
      } catch (err) {
        this.#onListenerError(err, event);
      }
    }
    return n;
  }

  removeAll(): void {
    this.#listeners.clear();
  }
}
