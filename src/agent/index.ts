/**
 * `muster agent` (brief §7, seed 002): the daemon on every host that owns partitions and runs one
 * child process per owned partition. See docs/agent.md.
 */
export * from './config.js';
export { AGENT_CONFIG_SCHEMA } from './schema.js';
