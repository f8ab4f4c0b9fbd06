/**
 * The bus wire format: length-prefixed frames on a TCP stream.
 *
 * ```
 * | body length: u32 BE | kind: u8 | id: u32 BE | body: UTF-8 JSON (may be empty) |
 * ```
 *
 * The 9-byte header carries the frame's kind and its call id outside the JSON, so a receiver can
 * skip an oversized frame without reading its body and still answer the call it belonged to with
 * `MUSTER_FRAME_TOO_LARGE`: the connection and the other calls on it are unaffected.
 */
import { MusterError } from '../errors.js';

/** Bytes of the fixed header. */
export const HEADER_BYTES = 9;

/** Frame kinds. */
export const Kind = {
  /** First frame each way: `{ v, node, address, token? }`. */
  Hello: 1,
  /** A call: `{ s: service, m: method, a: args, p?: partition, t?: token, d?: ms left }`. */
  Request: 2,
  /** A call's result: `{ r: result }`. */
  Response: 3,
  /** A call's (or, with id 0, the connection's) failure: `{ code, message, retryable, details, origin }`. */
  Error: 4,
  /** The caller gave up on call `id`. */
  Cancel: 5,
  /** A publication: `{ topic, id, m, exp? }`. `id` in the header is nonzero when an ack is wanted. */
  Publish: 6,
  /** Acknowledges publication `id`. */
  Ack: 7,
  /** Heartbeat; any frame counts as a sign of life. */
  Ping: 8,
} as const;
export type Kind = (typeof Kind)[keyof typeof Kind];
const MAX_KIND = 8;

/** Protocol version carried in the hello. */
export const PROTOCOL_VERSION = 1;

const EMPTY = Buffer.alloc(0);

/** Encodes one frame. `body` undefined → empty body. */
export function encodeFrame(kind: Kind, id: number, body?: unknown): Buffer {
  const json = body === undefined ? EMPTY : Buffer.from(JSON.stringify(body), 'utf8');
  const frame = Buffer.allocUnsafe(HEADER_BYTES + json.length);
  frame.writeUInt32BE(json.length, 0);
  frame[4] = kind;
  frame.writeUInt32BE(id >>> 0, 5);
  json.copy(frame, HEADER_BYTES);
  return frame;
}

/** What the decoder reports. */
export interface FrameSink {
  frame(kind: Kind, id: number, body: unknown): void;
  /** A frame whose body exceeds the limit; its bytes are being skipped. */
  oversized(kind: number, id: number, length: number): void;
  /** Bytes that are not the protocol; the decoder stops (the connection must close). */
  garbage(error: MusterError): void;
}

/**
 * Incremental decoder. `limit` bounds a body; `firstLimit` bounds the first frame (the hello), so a
 * stranger's bytes cannot make it buffer megabytes before the hello is checked.
 */
export class FrameDecoder {
  readonly #sink: FrameSink;
  #limit: number;
  readonly #chunks: Buffer[] = [];
  #total = 0;
  #skip = 0;
  #broken = false;

  constructor(sink: FrameSink, limit: number) {
    this.#sink = sink;
    this.#limit = limit;
  }

  setLimit(limit: number): void {
    this.#limit = limit;
  }

  push(chunk: Buffer): void {
    if (this.#broken) return;
    if (this.#skip > 0) {
      const n = Math.min(this.#skip, chunk.length);
      this.#skip -= n;
      if (n === chunk.length) return;
      chunk = chunk.subarray(n);
    }
    this.#chunks.push(chunk);
    this.#total += chunk.length;
    while (!this.#broken && this.#total >= HEADER_BYTES) {
      const head = this.#peek(HEADER_BYTES);
      const length = head.readUInt32BE(0);
      const kind = head[4] as number;
      const id = head.readUInt32BE(5);
      if (kind < 1 || kind > MAX_KIND) {
        this.#fail(`unknown frame kind ${kind}`);
        return;
      }
      if (length > this.#limit) {
        this.#consume(HEADER_BYTES);
        const n = Math.min(length, this.#total);
        this.#consume(n);
        this.#skip = length - n;
        this.#sink.oversized(kind, id, length);
        continue;
      }
      if (this.#total < HEADER_BYTES + length) return;
      const frame = this.#take(HEADER_BYTES + length);
      let body: unknown;
      if (length > 0) {
        try {
          body = JSON.parse(frame.toString('utf8', HEADER_BYTES));
        } catch {
          this.#fail(`a ${length}-byte frame body of kind ${kind} is not JSON`);
          return;
        }
      }
      this.#sink.frame(kind as Kind, id, body);
    }
  }

  #fail(message: string): void {
    this.#broken = true;
    this.#chunks.length = 0;
    this.#total = 0;
    this.#sink.garbage(new MusterError('MUSTER_PROTOCOL', message));
  }

  /** The first `n` bytes, merging chunks if needed (does not consume). */
  #peek(n: number): Buffer {
    const first = this.#chunks[0] as Buffer;
    if (first.length >= n) return first;
    const merged = Buffer.concat(this.#chunks);
    this.#chunks.length = 0;
    this.#chunks.push(merged);
    return merged;
  }

  /** Removes and returns the first `n` bytes. */
  #take(n: number): Buffer {
    const first = this.#peek(n);
    const out = first.subarray(0, n);
    this.#consume(n);
    return out;
  }

  #consume(n: number): void {
    this.#total -= n;
    while (n > 0) {
      const first = this.#chunks[0] as Buffer;
      if (first.length <= n) {
        this.#chunks.shift();
        n -= first.length;
      } else {
        this.#chunks[0] = first.subarray(n);
        n = 0;
      }
    }
  }
}
