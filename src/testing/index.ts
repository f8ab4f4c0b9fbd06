/**
 * `muster/testing`: helpers for tests of muster and of applications built on it.
 */
export { findBinary, needBinary, servicesRequired } from './services.js';
