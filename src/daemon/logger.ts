/** Structured logs: pino, JSON lines on stderr, with the daemon's name bound to every line. */
import { type Logger, pino } from 'pino';

/** The bindings muster's daemons put on child loggers; use these names so logs join up. */
export interface LogBindings {
  readonly service?: string;
  readonly instance?: string;
  readonly partition?: string | number;
  readonly [field: string]: unknown;
}

/**
 * The daemon's logger: `base` (the caller's, or a new pino on stderr, synchronous so that the last
 * line before an exit is written) with `{ daemon: name }`. `level` overrides the base's level.
 */
export function createDaemonLogger(name: string, level: string | undefined, base?: Logger): Logger {
  const root = base ?? pino({ level: level ?? 'info' }, pino.destination({ dest: 2, sync: true }));
  const log = root.child({ daemon: name });
  if (level !== undefined) log.level = level;
  return log;
}

/** A child logger with muster's bindings: `logFor(ctx.log, { service, instance, partition })`. */
export function logFor(log: Logger, bindings: LogBindings): Logger {
  return log.child(bindings);
}
