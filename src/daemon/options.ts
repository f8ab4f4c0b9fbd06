/** The daemon runtime's options, their defaults (each with its reason) and their resolution. */
import type { Logger } from 'pino';
import { type Clock, systemClock } from '../clock.js';
import { invalidArgument } from '../errors.js';
import { type Duration, toMillis } from '../util/duration.js';

/**
 * 30 s: Kubernetes' default `terminationGracePeriodSeconds` and systemd's `TimeoutStopSec` is 90 s,
 * so a daemon that takes its whole deadline is still forced by itself before anyone SIGKILLs it
 * (set it below the supervisor's grace period when that is shorter).
 */
export const DEFAULT_SHUTDOWN_TIMEOUT_MS = 30_000;
/**
 * 5 s: once forced, how long `stop(force)` may take before the runtime gives up on the body and
 * exits anyway. Forced work is cut, not drained: closing sockets and killing groups takes ms.
 */
export const DEFAULT_FORCE_TIMEOUT_MS = 5_000;
/**
 * 2 s: after a graceful stop, how long the process may linger before the runtime exits it (only
 * with `exitProcess`): a handle someone forgot to close must not keep a stopped daemon alive.
 */
export const EXIT_LINGER_MS = 2_000;
/** Loopback, any free port: the admin API is for this host unless the operator says otherwise. */
export const DEFAULT_ADMIN_LISTEN = '127.0.0.1:0';
/** `info`: start, stop and state changes; `MUSTER_LOG_LEVEL` or `--log-level` changes it. */
export const DEFAULT_LOG_LEVEL = 'info';
/** The environment variable that sets the log level when no option does. */
export const LOG_LEVEL_ENV = 'MUSTER_LOG_LEVEL';
/** pino's levels, and `silent`. */
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

/** Where the admin HTTP server listens, and its token. */
export interface AdminOptions {
  /** `host:port`; port 0 picks a free one. Default {@link DEFAULT_ADMIN_LISTEN}. */
  readonly listen?: string;
  /**
   * A file whose first line is the bearer token. Required when `listen` is not a loopback address;
   * optional on loopback (then every route but `/healthz` requires it).
   */
  readonly tokenFile?: string;
  /** The token itself (tests, embedding) instead of {@link tokenFile}. */
  readonly token?: string;
}

export interface DaemonOptions {
  /** `'serve' | 'agent' | 'proxy' | 'relay' | …`: the `daemon` binding of every log line. */
  readonly name: string;
  /** pino level; default `$MUSTER_LOG_LEVEL`, else {@link DEFAULT_LOG_LEVEL}. */
  readonly logLevel?: string;
  /** A pino logger to log through (tests pass their own); the runtime adds `{ daemon: name }`. */
  readonly logger?: Logger;
  /** The loopback admin HTTP server; `false`: none. Default `{ listen: '127.0.0.1:0' }`. */
  readonly admin?: AdminOptions | false;
  /** Graceful-stop deadline, then force. Default {@link DEFAULT_SHUTDOWN_TIMEOUT_MS}. */
  readonly shutdownTimeout?: Duration;
  /** After forcing, how long the body may take. Default {@link DEFAULT_FORCE_TIMEOUT_MS}. */
  readonly forceTimeout?: Duration;
  /** Handle SIGTERM, SIGINT and SIGHUP. Default true (tests: false, and call `stop()`). */
  readonly handleSignals?: boolean;
  /**
   * Own the process: set `process.exitCode`, exit at once after a forced stop, and at most
   * {@link EXIT_LINGER_MS} after a graceful one. Default: the value of `handleSignals`.
   */
  readonly exitProcess?: boolean;
  /** Stop gracefully when the parent's IPC channel closes (a forked child). Default false. */
  readonly stopOnDisconnect?: boolean;
  /** Time for the deadlines. Default: the system clock. */
  readonly clock?: Clock;
}

/** {@link DaemonOptions} with every default applied and every value checked. */
export interface ResolvedOptions {
  readonly name: string;
  readonly logLevel: string | undefined;
  readonly logger: Logger | undefined;
  readonly admin: { readonly listen: string; readonly tokenFile?: string; readonly token?: string } | false;
  readonly shutdownTimeoutMs: number;
  readonly forceTimeoutMs: number;
  readonly handleSignals: boolean;
  readonly exitProcess: boolean;
  readonly stopOnDisconnect: boolean;
  readonly clock: Clock;
}

/** Applies the defaults; throws `MUSTER_INVALID_ARGUMENT` naming the bad option. */
export function resolveOptions(options: DaemonOptions): ResolvedOptions {
  if (typeof options.name !== 'string' || !/^[a-z][a-z0-9-]*$/.test(options.name)) {
    throw invalidArgument(
      `a daemon name is lower-case letters, digits and '-', got '${String(options.name)}'`,
    );
  }
  const level =
    options.logLevel ?? (options.logger ? undefined : (process.env[LOG_LEVEL_ENV] ?? DEFAULT_LOG_LEVEL));
  if (level !== undefined && !(LOG_LEVELS as readonly string[]).includes(level)) {
    throw invalidArgument(`log level must be one of ${LOG_LEVELS.join(', ')}, got '${level}'`);
  }
  const admin = options.admin ?? {};
  if (admin !== false && admin.token !== undefined && admin.tokenFile !== undefined) {
    throw invalidArgument('give the admin API either a token or a token file, not both');
  }
  const handleSignals = options.handleSignals ?? true;
  return {
    name: options.name,
    logLevel: level,
    logger: options.logger,
    admin: admin === false ? false : { ...admin, listen: admin.listen ?? DEFAULT_ADMIN_LISTEN },
    shutdownTimeoutMs: toMillis(options.shutdownTimeout ?? DEFAULT_SHUTDOWN_TIMEOUT_MS, 'shutdownTimeout'),
    forceTimeoutMs: toMillis(options.forceTimeout ?? DEFAULT_FORCE_TIMEOUT_MS, 'forceTimeout'),
    handleSignals,
    exitProcess: options.exitProcess ?? handleSignals,
    stopOnDisconnect: options.stopOnDisconnect ?? false,
    clock: options.clock ?? systemClock,
  };
}
