import { SystemClock } from '../clock.js';
import { hostWallMs } from '../util/host-clock.js';

/**
 * Wall-clock time with sub-millisecond resolution, so lateness is not rounded to whole ms, and
 * consistent across the processes of a host (see {@link hostWallMs}).
 */
export class PreciseClock extends SystemClock {
  override now(): number {
    return hostWallMs();
  }
}
