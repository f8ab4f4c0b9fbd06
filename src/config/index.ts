/**
 * Scheduled configuration (seed 000, brief §3): named timelines of immutable versions with activation
 * instants; every process switches at the same instant and refuses work while it cannot prove it is
 * up to date.
 */
export {
  type ConfigVersion,
  type ConfigPolicy,
  type ConfigPolicyOptions,
  ConfigKeys,
  DEFAULT_ROOT_PREFIX,
  DEFAULT_MAX_STALENESS_MS,
  DEFAULT_MAX_CLOCK_SKEW_MS,
  DEFAULT_LEAD_SLACK_MS,
  DEFAULT_KEEP_VERSIONS,
  DEFAULT_POLICY,
  resolvePolicy,
  validateValue,
} from './model.js';
export { Timeline, ConfigSnapshot } from './timeline.js';
export { PrefixMirror, type ConfigSource, type MirrorHooks, type MirrorSettings } from './mirror.js';
export { Freshness } from './freshness.js';
export {
  ConfigHandle,
  openConfig,
  type OpenConfigOptions,
  type ConfigHandleState,
  type ConfigHandleEvents,
  type ConfigSwitch,
  type ConfigFreshness,
  DEFAULT_VERIFY_ROUNDS,
} from './handle.js';
export {
  initConfig,
  readConfig,
  publishConfig,
  cancelConfig,
  timelineOf,
  type ConfigState,
  type PublishOptions,
  type ConfigAccessOptions,
} from './publish.js';
export { diffValues, type ValueChange } from './diff.js';
export { ConfigRelay, type ConfigRelayOptions, type RelayStats, RELAY_LOG_BATCHES } from './relay.js';
export { RelayClient, type RelayClientOptions, DEFAULT_HELLO_TIMEOUT_MS } from './relay-client.js';
export {
  recordHolding,
  readHolders,
  holdingOf,
  waitForHolders,
  holdersPrefix,
  newestHeld,
  relayHolding,
  type RelayHolderRecorder,
  parseHolder,
  type HolderRecord,
  type HolderRecorder,
  type RecordHoldingOptions,
  type VersionHolding,
  DEFAULT_HOLDER_CHECK_MS,
} from './holders.js';
