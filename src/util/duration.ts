import { invalidArgument } from '../errors.js';

/** A duration in milliseconds, or a string such as `'250ms'`, `'3s'`, `'5m'`, `'1h'`, `'1m30s'`. */
export type Duration = number | string;

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Parses a {@link Duration} into milliseconds; throws `MUSTER_INVALID_ARGUMENT` on anything else. */
export function toMillis(value: Duration, what = 'duration'): number {
  if (typeof value === 'number') {
    if (!Number.isFinite(value) || value < 0) {
      throw invalidArgument(`${what} must be a finite, non-negative number of milliseconds, got ${value}`);
    }
    return value;
  }
  if (typeof value !== 'string') {
    throw invalidArgument(`${what} must be milliseconds or a string like '3s', got ${typeof value}`);
  }
  const text = value.trim();
  if (/^\d+(\.\d+)?$/.test(text)) return Number(text);
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h|d)/gy;
  let total = 0;
  let consumed = 0;
  for (let m = re.exec(text); m !== null; m = re.exec(text)) {
    total += Number(m[1]) * (UNIT_MS[m[2] as string] as number);
    consumed = re.lastIndex;
  }
  if (consumed === 0 || consumed !== text.length) {
    throw invalidArgument(`${what} '${value}' is not a duration; use e.g. '250ms', '3s', '5m', '1h30m'`);
  }
  return total;
}

/** Formats milliseconds for humans: `250ms`, `3s`, `1m30s`. */
export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms`;
  if (ms < 60_000) return `${+(ms / 1000).toFixed(ms % 1000 === 0 ? 0 : 2)}s`;
  const h = Math.floor(ms / 3_600_000);
  const m = Math.floor((ms % 3_600_000) / 60_000);
  const s = Math.round((ms % 60_000) / 1000);
  return `${h ? `${h}h` : ''}${m ? `${m}m` : ''}${s ? `${s}s` : ''}` || '0s';
}
