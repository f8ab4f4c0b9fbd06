/**
 * The one place the agent takes the process kernel from (Contract A). TEMPORARY: points at the
 * local shim until `src/process/` lands, then at `../process/index.js`.
 */
export {
  spawnProcess,
  ProcessRegistry,
  type ExitInfo,
  type ProcessHandle,
  type SpawnOptions,
} from './process-shim.js';
