/**
 * Placement: which instance owns which partition. A pure, deterministic function of the watched state
 * (partitions, instances, pins, settings), so every instance computes the same answer without a
 * coordinator. See docs/placement.md.
 */
export { assign } from './assign.js';
export { diffAssignments } from './diff.js';
export { partitionForKey, MAX_KEY_PARTITIONS } from './keys.js';
export {
  type AssignmentDiff,
  type IgnoredPin,
  type IgnoredPinReason,
  type InstanceState,
  type PartitionMap,
  type PlacementInput,
  type PlacementInstance,
  type PlacementResult,
  type PlacementSettings,
  type PlacementStats,
  DEFAULT_EPSILON,
  DEFAULT_SEED,
  DEFAULT_WEIGHT,
  MAX_PARTITIONS,
} from './types.js';
