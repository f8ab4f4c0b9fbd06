/** For sibling capabilities and the CLI (not the package root): the relay's metrics. */
export { registerRelayMetrics } from './relay-metrics.js';
/** For the dashboard: decoding the stored records it watches. */
export { decodePolicy, decodeVersion, type ConfigPolicy, type ConfigVersion } from './model.js';
