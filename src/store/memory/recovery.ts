/**
 * How a durable memory engine comes back: loading a snapshot, re-applying journal entries after it,
 * and taking the next snapshot. Nothing here is journaled again or shown to watchers.
 */
import { MusterError } from '../../errors.js';
import { type KeyValue, NO_LEASE } from '../types.js';
import type { CommitLog } from './commit-log.js';
import type { EngineSnapshot, JournalEntry } from './journal.js';
import type { KeyIndex } from './key-index.js';
import type { LeaseTable } from './leases.js';
import { WriteSet } from './write-set.js';

/** The state of one memory engine. */
export interface EngineParts {
  readonly index: KeyIndex;
  readonly leases: LeaseTable;
  readonly log: CommitLog;
}

/**
 * Re-applies one journal entry. Throws `MUSTER_CORRUPT_DATA` when a write does not follow the head
 * (the log has a gap).
 */
export function replayEntry({ index, leases, log }: EngineParts, entry: JournalEntry): void {
  switch (entry.type) {
    case 'write': {
      if (entry.revision !== log.head + 1) {
        throw new MusterError(
          'MUSTER_CORRUPT_DATA',
          `journal entry for revision ${entry.revision} follows revision ${log.head}; the log has a gap`,
          { details: { revision: entry.revision } },
        );
      }
      const ws = new WriteSet(entry.revision, index, leases);
      for (const c of entry.changes) {
        if ('deleted' in c) ws.delete(c.key);
        else {
          if (c.lease !== NO_LEASE) leases.ensure(c.lease);
          ws.put(c.key, c.value, c.lease);
        }
      }
      log.replayed(entry.revision, ws.events);
      return;
    }
    case 'lease-grant':
      leases.add(entry.id, entry.ttlSeconds);
      if (BigInt(entry.id) + 1n > leases.nextId) leases.nextId = BigInt(entry.id) + 1n;
      return;
    case 'lease-end': {
      // The deletions of its keys were the write entry just before.
      const keys = leases.take(entry.id);
      if (keys !== undefined) for (const key of keys) index.forgetLive(key, entry.id);
      return;
    }
    case 'compact':
      if (entry.revision > log.compacted && entry.revision <= log.head) compactTo(entry.revision, index, log);
      return;
  }
}

/** Drops history before `revision`, from the key index and the commit log. */
export function compactTo(revision: number, index: KeyIndex, log: CommitLog): void {
  log.compact(revision);
  index.compact(revision);
}

/** The durable state at the durable head (history before it is not included). */
export function takeSnapshot({ index, leases, log }: EngineParts): EngineSnapshot {
  const rev = log.durable;
  const kvs: KeyValue[] = [];
  for (const key of index.keys) {
    const kv = index.valueAt(key, rev, log.head);
    if (kv !== undefined) kvs.push(kv);
  }
  return {
    revision: rev,
    compactRevision: log.compacted,
    nextLeaseId: String(leases.nextId),
    leases: leases.grants(),
    kvs,
  };
}

/**
 * Loads a snapshot into an empty engine; leases restart their full TTL. The key-value objects are
 * taken as they are (see {@link KeyIndex.load}). Throws `MUSTER_INTERNAL` if the engine is not empty.
 */
export function restoreSnapshot({ index, leases, log }: EngineParts, snapshot: EngineSnapshot): void {
  if (log.head !== 1 || index.size > 0) {
    throw new MusterError('MUSTER_INTERNAL', 'restore() needs an empty engine');
  }
  leases.nextId = BigInt(snapshot.nextLeaseId);
  for (const l of snapshot.leases) leases.add(l.id, l.ttlSeconds);
  index.load(snapshot.kvs);
  for (const kv of snapshot.kvs) {
    if (kv.lease === NO_LEASE) continue;
    leases.ensure(kv.lease);
    leases.attach(kv.lease, kv.key);
  }
  log.restored(snapshot.revision, snapshot.compactRevision);
}
