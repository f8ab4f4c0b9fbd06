/**
 * The abort signal of one served call, made only if the handler asks for it.
 *
 * A call aborts when the caller gives up (cancel frame), when its connection closes, when the service
 * stops being served, or — keyed calls — when this node's ownership of the partition ends. Combining
 * those with `AbortSignal.any` per call cost ~37 µs and, on Node 20, leaked: every combined signal
 * stays referenced from the long-lived `leaving` signal until a full GC (245 MB after 120,000 calls,
 * measured), which made both the throughput ceiling and the latency tail (major GC pauses). Instead,
 * each source aborts the calls it knows about, and the `AbortController` exists only once a handler
 * reads `signal`; a handler that never looks (most do not) costs an object with two fields.
 */
import type { Caller, HandlerContext } from './types.js';

export class CallSignal {
  /** Links in the {@link CallList} of the service running it. */
  prev: CallSignal | undefined;
  next: CallSignal | undefined;
  #controller: AbortController | undefined;
  #reason: unknown;
  #aborted = false;

  get aborted(): boolean {
    return this.#aborted;
  }

  /** The signal handed to the handler (created on first use; already aborted if the call was). */
  get signal(): AbortSignal {
    if (this.#controller === undefined) {
      this.#controller = new AbortController();
      if (this.#aborted) this.#controller.abort(this.#reason);
    }
    return this.#controller.signal;
  }

  /** Aborts the call (the first reason wins; later calls do nothing). */
  abort(reason: unknown): void {
    if (this.#aborted) return;
    this.#aborted = true;
    this.#reason = reason;
    this.#controller?.abort(reason);
  }
}

/**
 * The calls a service is running, as an intrusive doubly linked list through the calls themselves:
 * adding and removing a call allocate nothing (a `Set` that fills and empties on every call
 * re-allocates its table and, through the replaced tables, keeps calls alive into the old
 * generation — see id-table.ts).
 */
export class CallList {
  #head: CallSignal | undefined;

  add(call: CallSignal): void {
    call.prev = undefined;
    call.next = this.#head;
    if (this.#head !== undefined) this.#head.prev = call;
    this.#head = call;
  }

  /** Removes `call` (which must be in this list). */
  delete(call: CallSignal): void {
    if (call.prev !== undefined) call.prev.next = call.next;
    else if (this.#head === call) this.#head = call.next;
    if (call.next !== undefined) call.next.prev = call.prev;
    call.prev = call.next = undefined;
  }

  /** Aborts every call in the list (they stay in it until their handlers finish). */
  abortAll(reason: unknown): void {
    for (let c = this.#head; c !== undefined;) {
      const next = c.next; // an abort listener may end the call and unlink it
      c.abort(reason);
      c = next;
    }
  }
}

/**
 * What a handler receives: the caller, the partition and token of a keyed call, and the call's
 * `signal`, made on first read. A class with the getter on its prototype, not an object literal with
 * a getter: each evaluation of a literal with an accessor made a new closure, a new accessor pair
 * and new hidden classes (~0.5 µs and ~0.4 KB, about 80 B of it promoted, per call — measured in
 * isolation), and those old-space hidden classes kept each call's young objects alive through
 * scavenges: ~0.5–1 KB promoted per call, and mark-compacts, in the bus's call path (docs/bus.md).
 */
export class CallContext implements HandlerContext {
  readonly #call: CallSignal;
  readonly caller: Caller;
  readonly partition: string | undefined;
  readonly token: number | undefined;

  constructor(call: CallSignal, caller: Caller, partition?: string, token?: number) {
    this.#call = call;
    this.caller = caller;
    this.partition = partition;
    this.token = token;
  }

  get signal(): AbortSignal {
    return this.#call.signal;
  }
}
