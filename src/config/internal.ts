/** For sibling capabilities and the CLI (not the package root): the relay's metrics. */
export { registerRelayMetrics } from './relay-metrics.js';
/** The version-history checker: public as `muster/testing`; the demo checks its fleet with it. */
export {
  checkVersionHistory,
  type TaskRecord,
  type VersionViolation,
  type HistoryReport,
} from './checker.js';
/** For the dashboard: decoding the stored records it watches. */
export { decodePolicy, decodeVersion, type ConfigPolicy, type ConfigVersion } from './model.js';
