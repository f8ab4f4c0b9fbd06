/**
 * A child's output, line by line, into its own size-rotated file: `<dir>/<service>-<partition>.log`,
 * rotated to `.1` … `.<keep>` when it passes `maxSize`. Writes are asynchronous and never block the
 * child (the kernel drains its pipes); when the disk falls behind by more than
 * {@link MAX_BUFFERED_BYTES}, lines are dropped and counted, and a line saying so is written once the
 * disk catches up.
 */
import {
  createWriteStream,
  mkdirSync,
  openSync,
  renameSync,
  rmSync,
  statSync,
  type WriteStream,
} from 'node:fs';
import { join } from 'node:path';

/** 4 MiB of lines waiting for the disk before lines are dropped: a slow disk must not grow the agent. */
export const MAX_BUFFERED_BYTES = 4 * 1024 * 1024;

export class RotatingLog {
  readonly path: string;
  readonly #maxSize: number;
  readonly #keep: number;
  #stream: WriteStream;
  #size: number;
  #dropped = 0;
  #closed = false;

  constructor(dir: string, name: string, maxSize: number, keep: number) {
    mkdirSync(dir, { recursive: true });
    this.path = join(dir, `${name.replace(/[^A-Za-z0-9._-]/g, '_')}.log`);
    this.#maxSize = maxSize;
    this.#keep = keep;
    try {
      this.#size = statSync(this.path).size;
    } catch {
      this.#size = 0;
    }
    this.#stream = this.#open();
  }

  #open(): WriteStream {
    // Opened synchronously: a stream that opened its file later would follow a rename it should not.
    const s = createWriteStream('', { fd: openSync(this.path, 'a') });
    s.on('error', () => undefined); // a full disk drops lines; it never stops the agent
    return s;
  }

  /** Lines dropped because the disk fell behind. */
  get dropped(): number {
    return this.#dropped;
  }

  write(stream: 'stdout' | 'stderr', line: string): void {
    if (this.#closed) return;
    if (this.#stream.writableLength > MAX_BUFFERED_BYTES) {
      this.#dropped++;
      return;
    }
    let text = `${new Date().toISOString()} ${stream === 'stderr' ? 'E' : 'O'} ${line}\n`;
    if (this.#dropped > 0) {
      text = `${new Date().toISOString()} - muster: ${this.#dropped} lines dropped (disk too slow)\n${text}`;
      this.#dropped = 0;
    }
    if (this.#size > 0 && this.#size + text.length > this.#maxSize) this.#rotate();
    this.#stream.write(text);
    this.#size += Buffer.byteLength(text);
  }

  #rotate(): void {
    this.#stream.end();
    try {
      if (this.#keep === 0) rmSync(this.path, { force: true });
      else {
        rmSync(`${this.path}.${this.#keep}`, { force: true });
        for (let i = this.#keep - 1; i >= 1; i--) {
          try {
            renameSync(`${this.path}.${i}`, `${this.path}.${i + 1}`);
          } catch {
            // not there yet
          }
        }
        renameSync(this.path, `${this.path}.1`);
      }
    } catch {
      // rotation failed: keep appending to the same file rather than lose lines
    }
    this.#size = 0;
    this.#stream = this.#open();
  }

  /** Flushes and closes; idempotent. */
  close(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    this.#closed = true;
    return new Promise((resolve) => this.#stream.end(resolve));
  }
}
