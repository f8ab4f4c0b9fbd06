/**
 * `muster demo`: the scheduled-configuration demo (worker processes switching versions at one
 * instant). The CLI runs it with `muster/testing`'s harnesses as its {@link DemoLaunchers}.
 */
export { runConfigDemo, type ConfigDemoOptions, type ConfigDemoResult } from './config-demo.js';
export type { DemoLaunchers, DemoProxy, DemoBackend } from './backend.js';
export { Fleet } from './fleet.js';
export { PreciseClock } from './precise-clock.js';
export {
  runSystemDemo,
  type SystemDemoOptions,
  type SystemDemoResult,
  type SystemDemoStep,
} from './system-demo.js';
