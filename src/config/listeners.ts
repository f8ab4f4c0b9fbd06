/**
 * A tiny typed listener map. A listener that throws is reported on `process` as a warning and never
 * interrupts the caller or the other listeners, so user code cannot corrupt a handle's state.
 */
export class Listeners<E> {
  readonly #map = new Map<keyof E, Set<(payload: never) => void>>();

  on<K extends keyof E>(event: K, fn: (payload: E[K]) => void): void {
    let set = this.#map.get(event);
    if (set === undefined) {
      set = new Set();
      this.#map.set(event, set);
    }
    set.add(fn);
  }

  off<K extends keyof E>(event: K, fn: (payload: E[K]) => void): void {
    this.#map.get(event)?.delete(fn);
  }

  count(event: keyof E): number {
    return this.#map.get(event)?.size ?? 0;
  }

  emit<K extends keyof E>(event: K, payload: E[K]): void {
    const set = this.#map.get(event);
    if (set !== undefined && set.size > 0) call([...set] as ((payload: E[K]) => void)[], event, payload);
  }

  /**
   * The listeners of `event` as they are now, as one function; `undefined` when there are none. For
   * an emit whose moment matters: everything but the calls is done beforehand.
   */
  prepare<K extends keyof E>(event: K): ((payload: E[K]) => void) | undefined {
    const set = this.#map.get(event);
    if (set === undefined || set.size === 0) return undefined;
    const fns = [...set] as ((payload: E[K]) => void)[];
    return (payload) => call(fns, event, payload);
  }
}

function call<P>(fns: readonly ((payload: P) => void)[], event: PropertyKey, payload: P): void {
  for (const fn of fns) {
    try {
      fn(payload);
    } catch (err) {
      process.emitWarning(`a '${String(event)}' listener threw: ${String(err)}`, 'MusterListenerWarning');
    }
  }
}
