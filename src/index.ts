/**
 * muster — a control plane for fleets of long-running processes.
 *
 * This is the public surface. Each capability lives in its own folder under `src/` and exports what
 * users need through its `index.ts`; this file re-exports those.
 */
export * from './errors.js';
export { type Clock, type TimerHandle, SystemClock, ManualClock, systemClock } from './clock.js';
export { type Duration, toMillis, formatDuration } from './util/duration.js';
export * from './store/index.js';
export * from './config/index.js';
export { startServer, type ServerOptions, type MusterServer } from './server/start.js';
export * from './placement/index.js';
export * from './membership/index.js';
// Both placement and membership name an InstanceState; the record's (with 'leaving') is the public one.
export type { InstanceState } from './membership/index.js';
export * from './partitions/index.js';
export * from './bus/index.js';
