/** For sibling capabilities and the CLI (not the package root): the relay's metrics. */
export { registerRelayMetrics } from './relay-metrics.js';
