/**
 * Proofs of freshness: when may a process claim it holds every version of a configuration?
 *
 * A proof is "as of" the monotonic instant at which it was *requested*, never the instant it arrived:
 * - a linearizable read of the store's head revision `H`, sent at `s`: every write committed before
 *   `s` has a revision ≤ `H`; once the watch has applied every event up to `H`, we hold all of them,
 *   so the handle is verified as of `s`;
 * - a watch progress notification requested at `s` and answered with revision `r` (≥ every revision
 *   we knew of at `s`): the watcher has seen every event up to the store's head at some moment after
 *   `s`, so again verified as of `s`.
 * Only one progress request is outstanding at a time, so each answer is matched to its own request.
 *
 * This class is pure bookkeeping driven by the caller; it never reads the store itself.
 */

/** One linearizable head read that has returned but is not yet covered by the watch. */
interface PendingHead {
  readonly sentMono: number;
  readonly head: number;
}

export class Freshness {
  #verifiedMono = -Infinity;
  #applied = 0;
  #knownHead = 0;
  #progress: { readonly sentMono: number; readonly knownHead: number } | undefined;
  #heads: PendingHead[] = [];

  /** Monotonic instant as of which the holder is proven complete; `-Infinity` before any proof. */
  get verifiedMono(): number {
    return this.#verifiedMono;
  }

  /** Revision up to which every event has been applied. */
  get applied(): number {
    return this.#applied;
  }

  /** True while a progress request waits for its answer. */
  get progressOutstanding(): boolean {
    return this.#progress !== undefined;
  }

  /** Send time of the outstanding progress request, if any. */
  get progressSentMono(): number | undefined {
    return this.#progress?.sentMono;
  }

  /** Send time of the oldest head read the watch has not caught up with yet. */
  get oldestUncoveredHeadMono(): number | undefined {
    return this.#heads[0]?.sentMono;
  }

  /** A full linearizable list at `revision`, sent at `sentMono`, replaced the holder's state. */
  listed(revision: number, sentMono: number): void {
    this.#applied = revision;
    this.#progress = undefined; // the old stream's answer will never come
    this.#noteHead(revision);
    this.#verify(sentMono);
    this.#settleHeads();
  }

  /** Every event up to `revision` has been applied (an events batch). */
  appliedUpTo(revision: number): void {
    if (revision > this.#applied) this.#applied = revision;
    this.#noteHead(revision);
    this.#settleHeads();
  }

  /**
   * Records a progress request sent at `sentMono`. Returns false (and records nothing) when one is
   * already outstanding: the caller must not send another.
   */
  requestProgress(sentMono: number): boolean {
    if (this.#progress !== undefined) return false;
    this.#progress = { sentMono, knownHead: this.#knownHead };
    return true;
  }

  /** A progress notification at `revision` arrived (all events up to it were already delivered). */
  progressReceived(revision: number): void {
    this.appliedUpTo(revision);
    const p = this.#progress;
    if (p === undefined) return; // unsolicited: proves nothing about a send time we know
    this.#progress = undefined;
    if (revision >= p.knownHead) this.#verify(p.sentMono);
  }

  /** The watch stream ended; its outstanding progress request will never be answered. */
  streamLost(): void {
    this.#progress = undefined;
  }

  /** A direct proof (e.g. a linearizable read whose content equals what we hold), sent at `sentMono`. */
  verifiedAsOf(sentMono: number): void {
    this.#verify(sentMono);
  }

  /** A linearizable head read sent at `sentMono` returned `head`. */
  headRead(sentMono: number, head: number): void {
    this.#noteHead(head);
    this.#heads.push({ sentMono, head });
    this.#heads.sort((a, b) => a.sentMono - b.sentMono);
    this.#settleHeads();
  }

  #noteHead(revision: number): void {
    if (revision > this.#knownHead) this.#knownHead = revision;
  }

  #settleHeads(): void {
    const left: PendingHead[] = [];
    for (const h of this.#heads) {
      if (h.head <= this.#applied) this.#verify(h.sentMono);
      else left.push(h);
    }
    this.#heads = left;
  }

  #verify(sentMono: number): void {
    if (sentMono > this.#verifiedMono) this.#verifiedMono = sentMono;
  }
}
