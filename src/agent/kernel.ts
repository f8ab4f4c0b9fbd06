/** The process kernel (Contract A), as the agent uses it. */
export {
  spawnProcess,
  discardSpare,
  ProcessRegistry,
  type ExitInfo,
  type ProcessHandle,
  type SpawnOptions,
} from '../process/index.js';
