/**
 * Routing keys to partitions, for the proxy and for clients that shard by key.
 */
import { invalidArgument } from '../errors.js';
import { jumpHash, murmur3, subSeed } from './hash.js';
import { SEED_KEY } from './tables.js';

/** The largest partition count jump consistent hash supports with its 31-bit arithmetic. */
export const MAX_KEY_PARTITIONS = 2 ** 31 - 1;

/**
 * The partition index in [0, partitionCount) that `key` belongs to: a 64-bit MurmurHash3 of the key's
 * UTF-8 bytes fed to jump consistent hash. The same on every machine; when the count grows from n to
 * n + 1 only about 1/(n + 1) of keys change partition, and they all move to the new partition n.
 *
 * @throws MusterError `MUSTER_INVALID_ARGUMENT` when `key` is not a string, `partitionCount` is not an
 *   integer in [1, 2^31 − 1], or `seed` is not an integer in [0, 2^32).
 */
export function partitionForKey(key: string, partitionCount: number, seed = 0): number {
  if (typeof key !== 'string') throw invalidArgument('the routing key must be a string', { field: 'key' });
  if (!Number.isInteger(partitionCount) || partitionCount < 1 || partitionCount > MAX_KEY_PARTITIONS) {
    throw invalidArgument(`partitionCount must be an integer in [1, ${MAX_KEY_PARTITIONS}]`, {
      field: 'partitionCount',
      value: partitionCount,
    });
  }
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) {
    throw invalidArgument('seed must be an integer in [0, 2^32)', { field: 'seed', value: seed });
  }
  const hi = murmur3(key, subSeed(seed, SEED_KEY));
  const lo = murmur3(key, subSeed(seed, SEED_KEY + 1));
  return jumpHash(hi, lo, partitionCount);
}
