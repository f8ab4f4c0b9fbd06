/** The proxy's counters flushed at scrape time: the daemon runtime's `CounterCache` (shared with the bus). */
export { CounterCache } from '../daemon/internal.js';
