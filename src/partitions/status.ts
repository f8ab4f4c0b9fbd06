/**
 * A one-shot reading of a service's partitions: per partition, who placement assigns it to, who owns
 * it, with which fencing token and since when (`muster partitions`).
 */
import type { Store } from '../store/index.js';
import { ownershipKeys } from './spec.js';
import { ServiceView } from './view.js';

/** One partition's row. */
export interface PartitionStatusRow {
  readonly partition: string;
  /** The instance placement assigns it to; `null` when no instance is active. */
  readonly assigned: string | null;
  /** The instance holding its owner key; `null` when nobody does (mid hand-off, or unassigned). */
  readonly owner: string | null;
  /** The owner key's createRevision; `null` without owner. */
  readonly token: number | null;
  /** ISO-8601 time the owner acquired it; `null` without owner. */
  readonly since: string | null;
  /** True when owner = assigned. */
  readonly settled: boolean;
}

/** The whole reading. */
export interface PartitionStatus {
  readonly service: string;
  /** The store revision it was read at. */
  readonly revision: number;
  /** Whether a spec exists. */
  readonly hasSpec: boolean;
  readonly instances: readonly { id: string; state: string; health: string; weight: number; owned: number }[];
  readonly partitions: readonly PartitionStatusRow[];
  /** Owner keys for partitions outside the spec (left over after a spec change, until released). */
  readonly strayOwners: readonly string[];
}

/**
 * Reads the partition table of `service`. Throws `MUSTER_INVALID_ARGUMENT` for a bad service name and
 * the store's errors.
 */
export async function readPartitionStatus(
  store: Store,
  service: string,
  options: { root?: string } = {},
): Promise<PartitionStatus> {
  const keys = ownershipKeys(options.root, service);
  const view = new ServiceView(store, keys);
  await view.loadOnce();
  const assignment = view.assignment();
  const owned = new Map<string, number>();
  const partitions: PartitionStatusRow[] = assignment.partitions.map((partition) => {
    const owner = view.owners.get(partition);
    const assigned = assignment.byPartition.get(partition) ?? null;
    if (owner !== undefined) owned.set(owner.instance, (owned.get(owner.instance) ?? 0) + 1);
    return {
      partition,
      assigned,
      owner: owner?.instance ?? null,
      token: owner?.token ?? null,
      since: owner?.since ?? null,
      settled: owner !== undefined && owner.instance === assigned,
    };
  });
  const inSpec = new Set(assignment.partitions);
  return {
    service,
    revision: view.revision,
    hasSpec: view.spec !== undefined,
    instances: [...view.instances.values()]
      .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
      .map((i) => ({
        id: i.id,
        state: i.state,
        health: i.health,
        weight: i.weight,
        owned: owned.get(i.id) ?? 0,
      })),
    partitions,
    strayOwners: [...view.owners.keys()].filter((p) => !inSpec.has(p)).sort(),
  };
}
