/** The process kernel (Contract A), as the agent uses it. */
export {
  spawnProcess,
  ProcessRegistry,
  type ExitInfo,
  type ProcessHandle,
  type SpawnOptions,
} from '../process/index.js';
