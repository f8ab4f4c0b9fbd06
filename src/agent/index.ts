/**
 * `muster agent` (brief §7, seed 002): the daemon on every host that owns partitions and runs one
 * child process per owned partition. See docs/agent.md.
 */
export * from './config.js';
export { AGENT_CONFIG_SCHEMA } from './schema.js';
export {
  Agent,
  type AgentRecord,
  type AgentPin,
  type AgentOptions,
  STATUS_RECORD_INTERVAL_MS,
  runFor,
  agentRunFile,
} from './agent.js';
export { runAgent, type RunAgentOptions, type RunningAgent } from './run.js';
export { type ChildState, type PartitionRow, backoffDelay } from './supervisor.js';
export { SSE_KEEPALIVE_MS } from './api.js';
export { RotatingLog, MAX_BUFFERED_BYTES } from './child-log.js';
