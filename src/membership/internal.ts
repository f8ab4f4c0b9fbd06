/**
 * What sibling capabilities (partitions, the proxy, the bus) need from membership beyond its public
 * surface: the one instance-record parser, the one drain rule (`withDrain`) and the once-per-key log of
 * malformed records.
 */
export { parseInstance, withDrain } from './types.js';
export { MalformedRecords, stderrWarn, type WarnLogger } from './malformed.js';
