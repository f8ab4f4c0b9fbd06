/**
 * A malformed record (a key under a watched prefix whose value muster cannot read) is skipped by
 * every reader and logged once with its key: once per write (key and modRevision), so a re-list after
 * a compaction does not repeat it, and a new bad write to the same key is reported again.
 */
import type { KeyValue } from '../store/index.js';

/** The one logger method readers of records need (pino-compatible). */
export interface WarnLogger {
  warn(obj: object, msg: string): void;
}

/** Writes a warning to stderr as one JSON line. */
export const stderrWarn: WarnLogger = {
  warn: (obj, msg) => process.stderr.write(`${JSON.stringify({ level: 'warn', msg, ...obj })}\n`),
};

/** Remembers which malformed writes were logged. */
export class MalformedRecords {
  readonly #logger: WarnLogger;
  /** key → modRevision of the malformed write that was logged. */
  readonly #logged = new Map<string, number>();

  constructor(logger: WarnLogger = stderrWarn) {
    this.#logger = logger;
  }

  /** Logs `kv` as a malformed `what` (e.g. 'instance record') unless this write was logged already. */
  report(kv: KeyValue, what: string): void {
    if (this.#logged.get(kv.key) === kv.modRevision) return;
    this.#logged.set(kv.key, kv.modRevision);
    try {
      this.#logger.warn(
        { key: kv.key, modRevision: kv.modRevision },
        `skipped a malformed ${what} at ${kv.key}: its value is not a record muster wrote`,
      );
    } catch {
      // A throwing logger must not break the view.
    }
  }

  /** Forgets `key` (it was deleted or now holds a good record). */
  clear(key: string): void {
    this.#logged.delete(key);
  }

  /** Keys currently skipped as malformed. */
  get size(): number {
    return this.#logged.size;
  }
}
