/**
 * The one place the agent takes the daemon runtime from (Contract B). TEMPORARY: points at the local
 * shim until `src/daemon/` lands, then at `../daemon/index.js`.
 */
export {
  runDaemon,
  httpStatusOf,
  type AdminHandler,
  type AdminServer,
  type Daemon,
  type DaemonBody,
  type DaemonContext,
  type DaemonOptions,
} from './daemon-shim.js';
