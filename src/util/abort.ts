/**
 * The one way muster listens to an AbortSignal (undici's api/abort-signal.js, etcd's Mutex.Lock): check
 * `aborted` first — a listener added to an already-aborted signal never runs — and remove the listener
 * when the wait is over, so long-lived signals do not collect listeners.
 */
import { abortedError } from '../errors.js';

const noop = (): void => undefined;

/**
 * Calls `listener` once when `signal` aborts — at once (synchronously) when it already has — and returns
 * a function that removes the listener (a no-op once it has run). `signal` may be undefined.
 */
export function onAbort(signal: AbortSignal | undefined, listener: (reason: unknown) => void): () => void {
  if (signal === undefined) return noop;
  if (signal.aborted) {
    listener(signal.reason);
    return noop;
  }
  const handler = (): void => listener(signal.reason);
  signal.addEventListener('abort', handler, { once: true });
  return () => signal.removeEventListener('abort', handler);
}

/**
 * Settles like `promise`, or rejects with `MUSTER_ABORTED` (cause: the signal's reason) as soon as
 * `signal` aborts — at once when it already has. The listener is removed either way. `promise` itself
 * is not cancelled; pass the signal to it as well when it takes one.
 */
export function abortable<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (signal === undefined) return promise;
  return new Promise<T>((resolve, reject) => {
    const off = onAbort(signal, () => reject(abortedError(signal)));
    promise.then(
      (value) => {
        off();
        resolve(value);
      },
      (err: unknown) => {
        off();
        reject(err instanceof Error ? err : new Error(String(err)));
      },
    );
  });
}

/**
 * Resolves after `ms`, or at once when `signal` aborts; never rejects. For loops that test
 * `signal.aborted` themselves. The timer is ref'd, so a pause keeps the process alive (a CLI waiting
 * between redraws); use the injected `Clock.sleep` in library code, where time must be controllable.
 */
export function pause(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      off();
      resolve();
    }, ms);
    const off = onAbort(signal, () => {
      clearTimeout(timer);
      resolve();
    });
  });
}
