/**
 * Inputs and outputs of {@link assign}. Everything here is plain data: placement does no I/O.
 */

/** `active` instances receive partitions; `draining` ones receive nothing (their pins are ignored). */
export type InstanceState = 'active' | 'draining';

/** One instance as placement sees it. */
export interface PlacementInstance {
  /** Unique, non-empty id. */
  readonly id: string;
  /** Relative capacity, finite and > 0. Default {@link DEFAULT_WEIGHT}. */
  readonly weight?: number;
  /** Default `'active'`. */
  readonly state?: InstanceState;
}

/** A partition → instance mapping given as a Map or as a plain object. */
export type PartitionMap = ReadonlyMap<string, string> | Readonly<Record<string, string>>;

/** Tuning of the placement function. Every instance of a service must use the same settings. */
export interface PlacementSettings {
  /**
   * Load bound: no instance receives more than ⌈(1 + epsilon) × its weighted share⌉ partitions
   * (pins aside). Finite and ≥ 0. Default {@link DEFAULT_EPSILON}.
   */
  readonly epsilon?: number;
  /** Hash seed, an integer in [0, 2^32). Changing it reshuffles everything. Default {@link DEFAULT_SEED}. */
  readonly seed?: number;
}

/** What {@link assign} places. */
export interface PlacementInput {
  /** Partition ids (unique, non-empty strings), or a count N meaning the ids `'0'` … `'N-1'`. */
  readonly partitions: readonly string[] | number;
  /** Instances (unique ids). Order does not matter. */
  readonly instances: readonly PlacementInstance[];
  /** Partition → instance pins, applied before anything else. */
  readonly pins?: PartitionMap;
  /**
   * Who owns each partition now. Optional: used only to avoid needless moves (see docs/placement.md,
   * "Current owners"). Entries for unknown partitions or instances are ignored.
   */
  readonly currentOwners?: PartitionMap;
  readonly settings?: PlacementSettings;
}

/** Why a pin was not applied. */
export type IgnoredPinReason = 'unknown-partition' | 'instance-absent' | 'instance-draining';

/** A pin that {@link assign} could not honour. */
export interface IgnoredPin {
  readonly partition: string;
  readonly instance: string;
  readonly reason: IgnoredPinReason;
}

/** How many partitions were placed by each rule, for logs and benchmarks. */
export interface PlacementStats {
  /** Placed by a pin. */
  readonly pinned: number;
  /** Placed on their rendezvous first choice. */
  readonly firstChoice: number;
  /** Kept on their current owner although it is not their first choice (the first choice was full). */
  readonly kept: number;
  /** Placed further down their preference order because better choices were full. */
  readonly overflowed: number;
  /**
   * Placed over the cap because every instance was full. Zero unless floating-point rounding of the
   * caps went wrong; present so a bug shows up in logs rather than as an unassigned partition.
   */
  readonly overCap: number;
}

/** The result of {@link assign}. */
export interface PlacementResult {
  /** Partition → instance for every placed partition, in input order. */
  readonly assignments: Map<string, string>;
  /** Partitions with no owner: all of them when there is no active instance, otherwise none. */
  readonly unassigned: readonly string[];
  /** Pins that could not be honoured, sorted by partition id. */
  readonly ignoredPins: readonly IgnoredPin[];
  /** Partitions per active instance, in id order (instances with none included). */
  readonly loads: ReadonlyMap<string, number>;
  /** The cap of each active instance: ⌈(1 + ε) × P × weight / total active weight⌉. */
  readonly caps: ReadonlyMap<string, number>;
  readonly stats: PlacementStats;
}

/** Moves between two assignments, as returned by {@link diffAssignments}. */
export interface AssignmentDiff {
  /** Partitions present in both with a different owner. */
  readonly moved: readonly { readonly partition: string; readonly from: string; readonly to: string }[];
  /** Partitions assigned only in `after`. */
  readonly added: readonly { readonly partition: string; readonly to: string }[];
  /** Partitions assigned only in `before`. */
  readonly removed: readonly { readonly partition: string; readonly from: string }[];
}

/** 10 % headroom: keeps the largest instance close to its share while leaving room to avoid moves. */
export const DEFAULT_EPSILON = 0.1;
/** Any fixed value works; 0 so that two deployments that never set it agree. */
export const DEFAULT_SEED = 0;
/** Equal weights unless told otherwise. */
export const DEFAULT_WEIGHT = 1;
/** Partition counts above this are almost certainly a mistake (and would need > 1 GB of state). */
export const MAX_PARTITIONS = 10_000_000;
