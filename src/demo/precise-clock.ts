import { SystemClock } from '../clock.js';

/** Wall-clock time with sub-millisecond resolution, so lateness is not rounded to whole ms. */
export class PreciseClock extends SystemClock {
  override now(): number {
    return performance.timeOrigin + performance.now();
  }
}
