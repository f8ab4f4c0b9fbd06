/**
 * The calls in flight on one connection, by their 32-bit call id: an open-addressing hash table
 * (linear probing, deletion by backward shift) on two flat arrays.
 *
 * Why not a `Map`: a `Map` that fills and empties on every call re-allocates its table whenever a
 * delete leaves it sparse, and every replaced table stays linked to its successor. Once one of those
 * tables sits in the old generation, each later one — and the calls it held — is kept alive through
 * scavenges and promoted: about 0.5 KB per call with 32 in flight, measured with the bus's calls
 * (docs/bus.md, "Performance"). Here a set and a delete write two slots and allocate nothing; the
 * arrays grow (doubling) only when more calls are in flight than ever before.
 *
 * Id 0 is never a call id (it is the connection's own frames), so it marks an empty slot.
 */
const INITIAL_CAPACITY = 64;

export class IdTable<V> {
  #keys = new Uint32Array(INITIAL_CAPACITY);
  #values: (V | undefined)[] = new Array<V | undefined>(INITIAL_CAPACITY).fill(undefined);
  #mask = INITIAL_CAPACITY - 1;
  #size = 0;

  get size(): number {
    return this.#size;
  }

  get(id: number): V | undefined {
    const keys = this.#keys;
    for (let i = id & this.#mask; ; i = (i + 1) & this.#mask) {
      const k = keys[i] as number;
      if (k === id) return this.#values[i];
      if (k === 0) return undefined;
    }
  }

  /** Adds or replaces `id` (never 0). */
  set(id: number, value: V): void {
    if (id === 0) throw new RangeError('id 0 is not a call id');
    if ((this.#size + 1) * 2 > this.#keys.length) this.#grow();
    const keys = this.#keys;
    for (let i = id & this.#mask; ; i = (i + 1) & this.#mask) {
      const k = keys[i] as number;
      if (k === id || k === 0) {
        if (k === 0) this.#size++;
        keys[i] = id;
        this.#values[i] = value;
        return;
      }
    }
  }

  /** Removes `id`; true if it was there. */
  delete(id: number): boolean {
    const keys = this.#keys;
    const mask = this.#mask;
    let i = id & mask;
    for (;;) {
      const k = keys[i] as number;
      if (k === 0) return false;
      if (k === id) break;
      i = (i + 1) & mask;
    }
    this.#size--;
    // Backward shift: move later entries of the probe run into the hole, so lookups never need
    // tombstones.
    for (let j = (i + 1) & mask; ; j = (j + 1) & mask) {
      const k = keys[j] as number;
      if (k === 0) break;
      const home = k & mask;
      // Entry j may fill hole i if its home slot is not within (i, j] (cyclically).
      if (i <= j ? home <= i || home > j : home <= i && home > j) {
        keys[i] = k;
        this.#values[i] = this.#values[j];
        i = j;
      }
    }
    keys[i] = 0;
    this.#values[i] = undefined;
    return true;
  }

  /** A snapshot of the values (for closing and deadline scans, not the per-call path). */
  values(): V[] {
    const out: V[] = [];
    for (let i = 0; i < this.#keys.length; i++) if (this.#keys[i] !== 0) out.push(this.#values[i] as V);
    return out;
  }

  clear(): void {
    this.#keys.fill(0);
    this.#values.fill(undefined);
    this.#size = 0;
  }

  #grow(): void {
    const oldKeys = this.#keys;
    const oldValues = this.#values;
    const capacity = oldKeys.length * 2;
    this.#keys = new Uint32Array(capacity);
    this.#values = new Array<V | undefined>(capacity).fill(undefined);
    this.#mask = capacity - 1;
    this.#size = 0;
    for (let i = 0; i < oldKeys.length; i++) {
      const k = oldKeys[i] as number;
      if (k !== 0) this.set(k, oldValues[i] as V);
    }
  }
}
