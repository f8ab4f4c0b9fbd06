/** The daemon runtime (Contract B), as the agent uses it. */
export {
  runDaemon,
  startSse,
  type AdminHandler,
  type AdminServer,
  type Daemon,
  type DaemonBody,
  type DaemonContext,
} from '../daemon/index.js';
