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
 *
 * Frames are parsed where they lie in the chunk the socket delivered (a chunk usually holds whole
 * frames): nothing is copied or queued for them. Only the tail of an incomplete frame is kept, as a
 * list of pieces joined once the whole frame has arrived (one copy, never one per piece).
 */
export class FrameDecoder {
  readonly #sink: FrameSink;
  #limit: number;
  /** The pieces of an incomplete frame, and how many bytes they hold. */
  #parts: Buffer[] = [];
  #partBytes = 0;
  /** Bytes needed before the pieces are worth joining: the header, then the whole frame. */
  #need = 0;
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
    if (this.#partBytes > 0) {
      this.#parts.push(chunk);
      this.#partBytes += chunk.length;
      if (this.#partBytes < this.#need) return;
      chunk = this.#parts.length === 1 ? chunk : Buffer.concat(this.#parts, this.#partBytes);
      this.#parts = [];
      this.#partBytes = 0;
    }
    const end = chunk.length;
    let off = 0;
    while (!this.#broken) {
      const left = end - off;
      if (left < HEADER_BYTES) {
        this.#keep(chunk, off, HEADER_BYTES);
        return;
      }
      const length = chunk.readUInt32BE(off);
      const kind = chunk[off + 4] as number;
      const id = chunk.readUInt32BE(off + 5);
      if (kind < 1 || kind > MAX_KIND) {
        this.#fail(`unknown frame kind ${kind}`);
        return;
      }
      if (length > this.#limit) {
        const n = Math.min(length, left - HEADER_BYTES);
        off += HEADER_BYTES + n;
        this.#skip = length - n;
        this.#sink.oversized(kind, id, length);
        continue;
      }
      if (left - HEADER_BYTES < length) {
        this.#keep(chunk, off, HEADER_BYTES + length);
        return;
      }
      const start = off + HEADER_BYTES;
      off = start + length;
      let body: unknown;
      if (length > 0) {
        try {
          body = JSON.parse(chunk.toString('utf8', start, off));
        } catch {
          this.#fail(`a ${length}-byte frame body of kind ${kind} is not JSON`);
          return;
        }
      }
      this.#sink.frame(kind as Kind, id, body);
    }
  }

  /** Keeps `chunk[off..]` (an incomplete frame) until `need` bytes of it have arrived. */
  #keep(chunk: Buffer, off: number, need: number): void {
    if (off >= chunk.length) return;
    const rest = off === 0 ? chunk : chunk.subarray(off);
    this.#parts.push(rest);
    this.#partBytes = rest.length;
    this.#need = need;
  }

  #fail(message: string): void {
    this.#broken = true;
    this.#parts = [];
    this.#partBytes = 0;
    this.#sink.garbage(new MusterError('MUSTER_PROTOCOL', message));
  }
}
