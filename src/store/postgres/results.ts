/**
 * The PostgreSQL engine's small shared pieces: coded errors for revisions and leases, lease ids,
 * and the row the schema's `put()` function returns.
 */
import { randomBytes } from 'node:crypto';
import { MusterError } from '../../errors.js';
import type { LeaseId } from '../types.js';

/** What the schema's `put()` function returns. */
export interface PutRow {
  readonly o_revision: string;
  readonly o_found: boolean;
  readonly o_value: Buffer | null;
  readonly o_create_revision: string;
  readonly o_mod_revision: string;
  readonly o_version: string;
  readonly o_lease: string;
}

export function checkReadable(revision: number, head: number, compact: number): void {
  if (revision > head) throw futureRevision(revision, head);
  if (revision < compact) throw compactedError(revision, compact);
}

export function futureRevision(revision: number, head: number): MusterError {
  return new MusterError(
    'MUSTER_FUTURE_REVISION',
    `revision ${revision} is newer than the store head (${head})`,
    { details: { revision, head } },
  );
}

export function compactedError(revision: number, compactRevision: number): MusterError {
  return new MusterError(
    'MUSTER_COMPACTED',
    `revision ${revision} has been compacted (history before ${compactRevision} is gone); re-list and watch from the new revision`,
    { details: { revision, compactRevision } },
  );
}

export function leaseNotFound(id: string): MusterError {
  return new MusterError(
    'MUSTER_LEASE_NOT_FOUND',
    `lease ${id} does not exist (expired, revoked or never granted)`,
    {
      details: { lease: id },
    },
  );
}

/** A random positive 63-bit lease id, as a decimal string (etcd's ids are 64-bit too). */
export function newLeaseId(): LeaseId {
  const n = randomBytes(8).readBigUInt64BE() & 0x7fff_ffff_ffff_ffffn;
  return n === 0n ? '1' : n.toString();
}
