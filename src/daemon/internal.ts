/**
 * What sibling capabilities share of the daemon runtime's machinery (not part of the public API):
 * the hot-path histogram and counter the bus and the proxy record into their daemon's registry.
 */
export { CounterCache } from './counter-cache.js';
export { FastHistogram } from './fast-histogram.js';
