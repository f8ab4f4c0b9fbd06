/**
 * Partition ownership (brief §5): at most one owner per partition at every instant, eventually exactly
 * one, with fencing tokens. See docs/partitions.md.
 */
export { joinPartitioned, PartitionedHandle, stderrLogger } from './partitioned.js';
export { readPartitionStatus, type PartitionStatus, type PartitionStatusRow } from './status.js';
export {
  publishSpec,
  checkSpec,
  partitionIds,
  parseSpec,
  routeKey,
  parseRouteKey,
  putRoute,
  deleteRoute,
} from './spec.js';
export {
  openServiceView,
  ServiceViewHandle,
  type OpenServiceViewOptions,
  type PartitionDestination,
} from './open-view.js';
export type { ViewAssignment, ViewInstance } from './view.js';
export type {
  OwnershipMember,
  OwnershipSession,
  MemberState as OwnershipMemberState,
} from './registration.js';
export {
  type AcquireContext,
  type AcquireHandler,
  type AssumedPartition,
  type HandoffState,
  MAX_HANDOFF_BYTES,
  type JoinPartitionedOptions,
  type Owner,
  type OwnerFields,
  type OwnerRecord,
  type RouteRecord,
  type PartitionSettings,
  type PartitionedEvents,
  type PartitionedState,
  type PartitionsLogger,
  type PinRecord,
  type ReleaseHandler,
  type ServiceSpec,
  type StopCause,
  type UnhealthyPolicy,
  DEFAULT_MAX_CONCURRENT_ACQUIRES,
  DEFAULT_MAX_CONCURRENT_MOVES,
  DEFAULT_PARTITION_TTL_MS,
  DEFAULT_RETRY_DELAY_MS,
  DEFAULT_STOP_TIMEOUT_MS,
} from './types.js';
