/**
 * The memory engine's revisions and their path to durability: the head, durable and compacted
 * revisions, the events of recent revisions (for watches that start in the past), and the group
 * commit through the {@link Journal}.
 *
 * Without a journal a revision is durable, and published to watchers, as soon as it is sealed. With
 * one, it is published only after a journal flush that covers it; a flush failure stops the engine
 * for good (`MUSTER_INTERNAL`) and ends every watch.
 */
import { MusterError } from '../../errors.js';
import { checkRevision, inRange } from '../keys.js';
import type { Journal, JournalEntry } from './journal.js';
import type { CommittedEvent, MemoryWatch, WatchHub } from './watch-hub.js';
import type { WriteSet } from './write-set.js';

/** Sealed revisions, in order, and how far the journal has made them durable. */
export class CommitLog {
  readonly #journal: Journal | undefined;
  readonly #hub: WatchHub;
  #entries: { readonly revision: number; readonly events: CommittedEvent[] }[] = [];
  #base = 2; // revision of #entries[0]
  #head = 1;
  #durable = 1;
  #compacted = 0;
  /**
   * The oldest revision a watch can start from: every event from it on is held. 1 on a fresh store
   * (revision 1 has no events), the compaction revision after a compaction (its events are kept), and
   * the snapshot revision + 1 after a restart (the snapshot keeps no events).
   */
  #watchFrom = 1;
  #flushing: Promise<void> | undefined;
  #failed: MusterError | undefined;

  constructor(journal: Journal | undefined, hub: WatchHub) {
    this.#journal = journal;
    this.#hub = hub;
  }

  /** The newest sealed revision (durable or not). */
  get head(): number {
    return this.#head;
  }

  /** The newest revision the journal holds; watchers and reads see nothing newer. */
  get durable(): number {
    return this.#durable;
  }

  /** History before this revision is gone. */
  get compacted(): number {
    return this.#compacted;
  }

  /** The oldest revision a watch can start from (see `compact_revision` in etcd's watch). */
  get watchFrom(): number {
    return this.#watchFrom;
  }

  /** Why the engine stopped, once a journal flush failed. */
  get failed(): MusterError | undefined {
    return this.#failed;
  }

  /** True while sealed revisions wait for a journal flush. */
  get behind(): boolean {
    return this.#journal !== undefined && this.#durable < this.#head;
  }

  /** Journals an entry that is not a write (lease grant or end, compaction); nothing without a journal. */
  append(entry: JournalEntry): void {
    this.#journal?.append(entry);
  }

  /** Makes `ws` the head: logs it, journals it, and publishes it at once if there is no journal. */
  seal(ws: WriteSet): void {
    const rev = ws.revision;
    this.#head = rev;
    this.#entries.push({ revision: rev, events: ws.events });
    if (this.#journal === undefined) {
      this.#durable = rev;
      this.#hub.publish(rev, ws.events);
      return;
    }
    this.#journal.append({ type: 'write', revision: rev, changes: ws.changes });
  }

  /** Resolves once revision `rev` is durable; rejects with `MUSTER_INTERNAL` if the journal failed. */
  waitDurable(rev: number): Promise<void> {
    if (rev <= this.#durable) return Promise.resolve();
    return this.flush();
  }

  /**
   * The revision a read sees, given the `head` it waited to be durable: `head`, or `revision` if it
   * is still held. Throws `MUSTER_FUTURE_REVISION` past the head and `MUSTER_COMPACTED` before the
   * compaction.
   */
  readAt(revision: number | undefined, head: number): number {
    if (revision === undefined) return head;
    checkRevision(revision);
    if (revision > head) {
      throw new MusterError(
        'MUSTER_FUTURE_REVISION',
        `revision ${revision} is newer than the store head ${head}`,
        { details: { revision } },
      );
    }
    if (revision < this.#compacted) throw compactedError(revision, this.#compacted);
    return revision;
  }

  /** Throws `MUSTER_FUTURE_REVISION` past the head and `MUSTER_COMPACTED` unless past the compaction. */
  checkCompact(revision: number): void {
    if (revision > this.#head) {
      throw new MusterError(
        'MUSTER_FUTURE_REVISION',
        `cannot compact to revision ${revision}: the head is ${this.#head}`,
        { details: { revision } },
      );
    }
    if (revision <= this.#compacted) throw compactedError(revision, this.#compacted);
  }

  /**
   * Queues for `w` the durable events in its range from revision `from` on; the flush publishes the
   * rest in order. Throws `MUSTER_COMPACTED` when those events are gone.
   */
  catchUp(w: MemoryWatch, from: number): void {
    if (from < this.#watchFrom) throw compactedError(from, this.#watchFrom);
    for (let r = Math.max(from, this.#base); r <= this.#durable; r++) {
      const entry = this.#entries[r - this.#base];
      if (entry === undefined) continue;
      for (const e of entry.events) if (inRange(w.range, e.event.kv.key)) w.pushEvent(r, e);
    }
  }

  /** Forgets the events of revisions before `revision`. */
  compact(revision: number): void {
    this.#compacted = revision;
    this.#watchFrom = Math.max(this.#watchFrom, revision);
    const drop = Math.max(0, Math.min(this.#entries.length, revision - this.#base));
    if (drop > 0) {
      this.#entries = this.#entries.slice(drop);
      this.#base += drop;
    }
  }

  /** Takes a write re-applied from the journal at start-up as the durable head, without publishing it. */
  replayed(revision: number, events: CommittedEvent[]): void {
    this.#head = this.#durable = revision;
    this.#entries.push({ revision, events });
  }

  /** Starts over from a snapshot at `revision`, with no events before it. */
  restored(revision: number, compactRevision: number): void {
    this.#head = this.#durable = revision;
    this.#compacted = Math.max(compactRevision, 0);
    this.#watchFrom = Math.max(this.#compacted, revision + 1);
    this.#base = revision + 1;
    this.#entries = [];
  }

  /** Group commit: one journal flush covers everything appended before it started. */
  async flush(): Promise<void> {
    const journal = this.#journal;
    if (journal === undefined) return;
    const target = this.#head;
    while (this.#durable < target || this.#flushing !== undefined) {
      if (this.#failed) throw this.#failed;
      if (this.#flushing === undefined) {
        this.#flushing = this.#flushOnce(journal).finally(() => {
          this.#flushing = undefined;
        });
      }
      await this.#flushing;
      if (this.#durable >= target) break;
    }
    if (this.#failed) throw this.#failed;
    if (this.#durable < target) await this.#flushOnce(journal);
  }

  async #flushOnce(journal: Journal): Promise<void> {
    const target = this.#head;
    try {
      await journal.flush();
    } catch (err) {
      this.#failed = new MusterError(
        'MUSTER_INTERNAL',
        'the write-ahead log could not be made durable; the store stopped',
        {
          cause: err,
        },
      );
      this.#hub.failAll(this.#failed);
      throw this.#failed;
    }
    for (let r = this.#durable + 1; r <= target; r++) {
      const entry = this.#entries[r - this.#base];
      this.#durable = r;
      if (entry !== undefined) this.#hub.publish(r, entry.events);
    }
    this.#durable = Math.max(this.#durable, target);
  }
}

/** `MUSTER_COMPACTED` for a read or watch at `revision`. */
export function compactedError(revision: number, compactRevision: number): MusterError {
  return new MusterError(
    'MUSTER_COMPACTED',
    `revision ${revision} has been compacted (history before ${compactRevision} is gone); re-list and watch from the new revision`,
    { details: { revision, compactRevision } },
  );
}
