/**
 * What sibling capabilities (config's relay client, the embedded server) need from the store beyond
 * its public surface: the bounded watch queue that every engine's watch is built on.
 */
export * from './index.js';
export { WatchQueue } from './watch-queue.js';
