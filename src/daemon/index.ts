/**
 * The daemon runtime: one lifecycle for every long-running muster command (serve, the config relay,
 * the agent, the proxy, the bus). Signals (graceful, then forced), pino logs with bindings,
 * Prometheus metrics on a per-daemon registry, and a loopback admin HTTP server. See docs/daemon.md.
 */
export { runDaemon, DAEMON_EXIT, type Daemon, type DaemonBody, type DaemonContext } from './run.js';
export {
  DEFAULT_ADMIN_LISTEN,
  DEFAULT_FORCE_TIMEOUT_MS,
  DEFAULT_LOG_LEVEL,
  DEFAULT_SHUTDOWN_TIMEOUT_MS,
  EXIT_LINGER_MS,
  LOG_LEVEL_ENV,
  LOG_LEVELS,
  type AdminOptions,
  type DaemonOptions,
} from './options.js';
export {
  readJsonBody,
  sendJson,
  startSse,
  DEFAULT_MAX_BODY_BYTES,
  type AdminHandler,
  type AdminServer,
} from './admin.js';
export { logFor, type LogBindings } from './logger.js';
export { DAEMON_STATES, type DaemonState } from './metrics.js';
export { cleanUpOnInterrupt, signalExitCode } from './signals.js';
export type { Logger } from 'pino';
export type { Registry } from 'prom-client';
