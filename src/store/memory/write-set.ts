/**
 * One revision of the memory engine under construction: each put or delete is applied to the key
 * index and the lease table at once, and recorded twice — as watch events and as journal changes —
 * for the commit log to seal.
 */
import { EMPTY_BYTES } from '../keys.js';
import { type KeyValue, type LeaseId, NO_LEASE } from '../types.js';
import type { JournalChange } from './journal.js';
import type { KeyIndex } from './key-index.js';
import type { LeaseTable } from './leases.js';
import type { CommittedEvent } from './watch-hub.js';

/** The changes of one new revision. */
export class WriteSet {
  readonly revision: number;
  /** What watchers will see, in order. */
  readonly events: CommittedEvent[] = [];
  /** What the journal will record, in order. */
  readonly changes: JournalChange[] = [];
  readonly #index: KeyIndex;
  readonly #leases: LeaseTable;

  constructor(revision: number, index: KeyIndex, leases: LeaseTable) {
    this.revision = revision;
    this.#index = index;
    this.#leases = leases;
  }

  /** Writes `key` (the caller checked that `lease` exists). */
  put(key: string, value: Uint8Array, lease: LeaseId): void {
    const rev = this.revision;
    const prev = this.#index.live(key);
    const kv: KeyValue = {
      key,
      value,
      createRevision: prev?.createRevision ?? rev,
      modRevision: rev,
      version: (prev?.version ?? 0) + 1,
      lease,
    };
    if (prev !== undefined && prev.lease !== NO_LEASE && prev.lease !== lease) {
      this.#leases.detach(prev.lease, key);
    }
    if (lease !== NO_LEASE) this.#leases.attach(lease, key);
    this.#index.put(kv);
    const event = { type: 'put' as const, kv, prev };
    this.events.push({ event, bare: prev === undefined ? event : { type: 'put', kv } });
    this.changes.push({ key, value, lease });
  }

  /** Deletes `key` if it is live; returns its value before the deletion. */
  delete(key: string): KeyValue | undefined {
    const rev = this.revision;
    const prev = this.#index.live(key);
    if (prev === undefined) return undefined;
    if (prev.lease !== NO_LEASE) this.#leases.detach(prev.lease, key);
    this.#index.delete(key, rev);
    const kv: KeyValue = {
      key,
      value: EMPTY_BYTES,
      createRevision: 0,
      modRevision: rev,
      version: 0,
      lease: NO_LEASE,
    };
    this.events.push({ event: { type: 'delete', kv, prev }, bare: { type: 'delete', kv } });
    this.changes.push({ key, deleted: true });
    return prev;
  }
}
