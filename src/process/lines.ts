/**
 * Splits a child's output into lines without ever holding the child back: the stream is always read
 * (flowing mode) whatever the consumer does, and a line longer than the cap is cut, so a child that
 * writes megabytes without a newline costs a bounded buffer.
 */
import type { Readable } from 'node:stream';

/** 64 KiB: longer than any sane log line, small enough that a runaway writer costs little memory. */
export const MAX_LINE_BYTES = 64 * 1024;

/** What a line longer than the cap gets appended after its first {@link MAX_LINE_BYTES} bytes. */
export const TRUNCATED_MARK = ' …[truncated]';

const NL = 0x0a;

/**
 * Reads `stream` to its end, calling `onLine` for each line (without its `\n` or `\r\n`); the last
 * line is delivered at the end even without a newline. `onLine` exceptions are swallowed (a consumer's
 * bug must not stop the draining) and reported once through `onError`.
 */
export function readLines(
  stream: Readable,
  onLine: (line: string) => void,
  onError: (err: unknown) => void,
  maxBytes = MAX_LINE_BYTES,
): void {
  let parts: Buffer[] = [];
  let size = 0;
  /** Inside an over-long line: drop bytes until its newline. */
  let skipping = false;
  let failed = false;
  const emit = (buf: Buffer, truncated: boolean): void => {
    let end = buf.length;
    if (!truncated && end > 0 && buf[end - 1] === 0x0d) end--;
    const line = buf.toString('utf8', 0, end) + (truncated ? TRUNCATED_MARK : '');
    try {
      onLine(line);
    } catch (err) {
      if (!failed) onError(err);
      failed = true;
    }
  };
  stream.on('data', (chunk: Buffer) => {
    let start = 0;
    while (start < chunk.length) {
      const nl = chunk.indexOf(NL, start);
      const end = nl < 0 ? chunk.length : nl;
      if (skipping) {
        if (nl >= 0) skipping = false;
      } else {
        const piece = chunk.subarray(start, end);
        if (size + piece.length > maxBytes) {
          parts.push(piece.subarray(0, maxBytes - size));
          emit(Buffer.concat(parts), true);
          parts = [];
          size = 0;
          skipping = nl < 0;
        } else if (nl >= 0) {
          emit(parts.length === 0 ? piece : Buffer.concat([...parts, piece]), false);
          parts = [];
          size = 0;
        } else {
          // Copy: the chunk's memory may be reused by the stream.
          parts.push(Buffer.from(piece));
          size += piece.length;
        }
      }
      start = end + 1;
    }
  });
  stream.on('end', () => {
    if (size > 0) emit(Buffer.concat(parts), false);
    parts = [];
    size = 0;
  });
  stream.on('error', () => undefined); // the child's end closed abruptly: nothing more to read
}
