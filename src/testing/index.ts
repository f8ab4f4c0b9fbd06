/**
 * `muster/testing`: helpers for tests of muster and of applications built on it.
 */
export { findBinary, needBinary, servicesRequired } from './services.js';
export { storeConformance, type ConformanceTarget, type ConformanceOptions } from './conformance.js';
export { collectUntil, waitFor } from './watch-helpers.js';
export { ManualClock } from '../clock.js';
