/**
 * Membership: sessions, instance records, watched views, discovery and health checks (brief §2, §4).
 */
export {
  openSession,
  Session,
  safetyMargin,
  type SessionOptions,
  type SessionState,
  type SessionEvents,
  DEFAULT_SESSION_TTL_MS,
  MIN_SESSION_TTL_MS,
  DEFAULT_CLOCK_RATE_ERROR_PPM,
  DEFAULT_MIN_SAFETY_MARGIN_MS,
} from './session.js';
export {
  DEFAULT_ROOT,
  serviceKeys,
  servicesPrefix,
  statusPrefix,
  parseInstanceKey,
  parseDrainKey,
  normalizeRoot,
  checkServiceName,
  checkSegment,
  type ServiceKeys,
} from './keys.js';
export {
  type Instance,
  type InstanceRecord,
  type InstanceState,
  type HealthStatus,
  INSTANCE_STATES,
  HEALTH_STATUSES,
  isHealthy,
  parseInstance,
  severity,
  checkAddress,
  checkNotes,
} from './types.js';
export {
  join,
  Member,
  defaultInstanceId,
  isMemberGone,
  type JoinOptions,
  type MemberState,
  type MemberEvents,
} from './member.js';
export {
  watchInstances,
  InstanceView,
  RESYNC_BACKOFF_MS,
  type InstanceChange,
  type InstancesUpdate,
  type WatchInstancesOptions,
  type InstanceViewEvents,
} from './watch.js';
export {
  Balancer,
  listenAndJoin,
  type BalanceStrategy,
  type BalancerOptions,
  type ListenAndJoinOptions,
} from './discovery.js';
export {
  HealthChecks,
  Check,
  DEFAULT_CHECK_INTERVAL_MS,
  DEFAULT_CHECK_TIMEOUT_MS,
  DEFAULT_INITIAL_STATUS,
  type CheckOptions,
  type ScriptCheckOptions,
  type HttpCheckOptions,
  type TtlCheckOptions,
  type CheckOptionsBase,
  type CheckTransition,
  type CheckHandler,
  type CheckAction,
  type HealthChecksOptions,
  type HealthChecksEvents,
} from './checks.js';
export { runScriptProbe, runHttpProbe, type ProbeResult, MAX_OUTPUT_BYTES } from './probes.js';
