/**
 * A fake partition worker that records its life in an ownership history: `start` when it begins,
 * a `work` event per unit of work (only while its context says it may still act), and `stop` when
 * its signal aborts, with the session deadline as `validUntil`. Used by simulations and by the
 * separate-process churn tests; the checker then judges the history.
 */
import type { Clock } from '../clock.js';
import type { AcquireContext } from '../partitions/index.js';
import type { HistorySink } from './ownership-history.js';
import { onAbort } from '../util/abort.js';

export interface RecordingWorkerOptions {
  readonly sink: HistorySink;
  readonly instance: string;
  /** Time for the history (the clock all recorders share). */
  readonly now: () => number;
  /** Converts a session deadline (the handle clock's monotonic ms) to history time. */
  readonly toHistoryTime: (monotonic: number) => number;
  /** Clock for the work ticks. */
  readonly clock: Clock;
  /** Do one unit of work this often; undefined: no work events. */
  readonly workIntervalMs?: number;
  /**
   * Misbehave on purpose, to prove that the checker catches it: work without checking `valid()` and
   * record stops without the deadline. Default: false.
   */
  readonly ignoreDeadline?: boolean;
}

/** Returns an `onAcquire` handler that records start, work and stop. */
export function recordingWorker(
  options: RecordingWorkerOptions,
): (partition: string, context: AcquireContext) => Promise<void> {
  const { sink, instance, now, clock } = options;
  return async (partition, context) => {
    const { token, signal } = context;
    sink.record({ type: 'start', t: now(), instance, partition, token });
    await new Promise<void>((resolve) => {
      let timer: ReturnType<Clock['setTimeout']> | undefined;
      const tick = (): void => {
        // The work's instant is read before the check, and the check proves it inside the ownership:
        // `valid()` true at a later instant means the deadline had not passed at this one. Read after
        // the check, a pause of the process between the two (a SIGSTOP, which the churn sends) would
        // date the work after the deadline: the zombie that fencing tokens exist for, which no
        // validity check can prevent (CI caught it once: work dated 4.5 ms after a SIGCONT).
        const t = now();
        if (options.ignoreDeadline === true || context.valid())
          sink.record({ type: 'work', t, instance, partition, token });
        if (!signal.aborted && options.workIntervalMs !== undefined)
          timer = clock.setTimeout(tick, options.workIntervalMs);
      };
      if (options.workIntervalMs !== undefined) timer = clock.setTimeout(tick, options.workIntervalMs);
      onAbort(signal, () => {
        if (timer !== undefined) clock.clearTimeout(timer);
        resolve();
      });
    });
    sink.record({
      type: 'stop',
      t: now(),
      instance,
      partition,
      token,
      ...(options.ignoreDeadline === true ? {} : { validUntil: options.toHistoryTime(context.deadline()) }),
    });
  };
}
