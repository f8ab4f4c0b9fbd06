/**
 * The HTTP/2 server side that gRPC needs, on a plain socket (or a TLS one): frames, HPACK decoding,
 * flow control, PING, SETTINGS, RST_STREAM and GOAWAY — what `node:http2` did, without its per-stream
 * objects and with one socket write per event-loop turn (an answer's headers, message and trailers
 * leave together; `node:http2` sends trailers a turn after the data).
 *
 * Scope (RFC 9113, server role, gRPC's use of it): client-initiated streams; no server push; header
 * blocks decoded with the client's HPACK dynamic table (RFC 7541), answers encoded without one
 * (indexed `:status: 200`, literals "without indexing"); priorities ignored. Receive windows are
 * large and replenished as data is consumed (requests are bounded by the message limit above);
 * send windows follow the client's SETTINGS and WINDOW_UPDATEs.
 */
import type { Duplex } from 'node:stream';
import { H2Error, HpackDecoder } from './hpack.js';

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');
const FRAME_HEADER = 9;
const DATA = 0;
const HEADERS = 1;
const RST_STREAM = 3;
const SETTINGS = 4;
const PUSH_PROMISE = 5;
const PING = 6;
const GOAWAY = 7;
const WINDOW_UPDATE = 8;
const CONTINUATION = 9;
const END_STREAM = 0x1;
const ACK = 0x1;
const END_HEADERS = 0x4;
const PADDED = 0x8;
const PRIORITY = 0x20;
const NO_ERROR = 0;
const PROTOCOL_ERROR = 1;
const INTERNAL_ERROR = 2;
const FLOW_CONTROL_ERROR = 3;
const FRAME_SIZE_ERROR = 6;
const DEFAULT_WINDOW = 65_535;
const MAX_WINDOW = 2 ** 31 - 1;
/** Our receive windows (connection and each stream): 16 MiB, replenished once half is consumed. */
const RECEIVE_WINDOW = 16 * 1024 * 1024;
/** Largest frame we accept (the protocol's default; we do not raise it). */
const MAX_FRAME = 16_384;
/** Largest header block (HEADERS and its CONTINUATIONs) accepted. */
const MAX_HEADER_BLOCK = 256 * 1024;
/** Queued answer bytes of one stream above which `write` reports back-pressure. */
const STREAM_HIGH_WATER = 1024 * 1024;

/** An HPACK integer with an `n`-bit prefix, its first byte or-ed with `first`. */
function hpackInt(v: number, n: number, first: number, out: number[]): void {
  const max = 2 ** n - 1;
  if (v < max) {
    out.push(first | v);
    return;
  }
  out.push(first | max);
  v -= max;
  while (v >= 128) {
    out.push((v % 128) | 0x80);
    v = Math.floor(v / 128);
  }
  out.push(v);
}

/** A literal header field without indexing, with a literal name (RFC 7541 §6.2.2). */
function literal(name: string, value: string): Buffer {
  const bytes: number[] = [0];
  hpackInt(name.length, 7, 0, bytes);
  const v = Buffer.from(value, 'latin1');
  const head = Buffer.from(bytes);
  const vl: number[] = [];
  hpackInt(v.length, 7, 0, vl);
  return Buffer.concat([head, Buffer.from(name, 'latin1'), Buffer.from(vl), v]);
}

/** `:status: 200` (static index 8) and `content-type: application/grpc` (name index 31). */
const GRPC_HEADERS = Buffer.concat([Buffer.from([0x88, 0x0f, 0x10, 16]), Buffer.from('application/grpc')]);
const OK_TRAILERS = literal('grpc-status', '0');
/** `:status: 415` (name index 8). */
const UNSUPPORTED_MEDIA = Buffer.concat([Buffer.from([0x08, 3]), Buffer.from('415')]);

function frameHeader(length: number, type: number, flags: number, id: number): Buffer {
  const b = Buffer.allocUnsafe(FRAME_HEADER);
  b.writeUIntBE(length, 0, 3);
  b[3] = type;
  b[4] = flags;
  b.writeUInt32BE(id, 5);
  return b;
}

/** One stream as a gRPC server uses it. */
export class H2Stream {
  readonly id: number;
  readonly headers: Record<string, string>;
  /** Each DATA chunk of the request. */
  onData: (chunk: Buffer) => void = () => undefined;
  /** The client ended its side. */
  onEnd: () => void = () => undefined;
  /** The stream is gone before we finished it (client reset, connection lost). */
  onReset: () => void = () => undefined;
  /** Queued answer bytes fell below the high-water mark again. */
  onDrain: () => void = () => undefined;
  readonly #conn: H2Connection;
  /** Our send window for this stream. */
  window: number;
  /** What the client may still send before we replenish. */
  receiveUsed = 0;
  headersSent = false;
  /** We sent END_STREAM (or are about to, once queued data is out). */
  finished = false;
  remoteEnded = false;
  closed = false;
  /** DATA payloads waiting for window, then the trailers. */
  readonly queue: Buffer[] = [];
  queuedBytes = 0;
  trailers: Buffer | undefined;
  blocked = false;

  constructor(conn: H2Connection, id: number, headers: Record<string, string>, window: number) {
    this.#conn = conn;
    this.id = id;
    this.headers = headers;
    this.window = window;
  }

  /** Sends `:status 200` and `content-type: application/grpc` (once). */
  respond(): void {
    if (this.headersSent || this.closed) return;
    this.headersSent = true;
    this.#conn.frame(HEADERS, END_HEADERS, this.id, GRPC_HEADERS);
  }

  /** Queues one gRPC message; false when the caller should wait for `onDrain`. */
  write(message: Buffer): boolean {
    if (this.closed || this.finished) return false;
    this.respond();
    this.queue.push(message);
    this.queuedBytes += message.length;
    this.#conn.pump(this);
    return this.queuedBytes < STREAM_HIGH_WATER;
  }

  /** Ends the stream with a status: trailers after the queued messages, or trailers-only. */
  finish(code: number, message: string): void {
    if (this.closed || this.finished) return;
    this.finished = true;
    const status =
      code === 0
        ? OK_TRAILERS
        : Buffer.concat([literal('grpc-status', String(code)), literal('grpc-message', message)]);
    if (!this.headersSent) {
      this.headersSent = true;
      this.trailers = Buffer.concat([GRPC_HEADERS, status]);
    } else this.trailers = status;
    this.#conn.pump(this);
  }

  /** Answers HTTP 415 (not a gRPC request) and ends the stream. */
  rejectMediaType(): void {
    if (this.closed || this.headersSent) return;
    this.headersSent = true;
    this.finished = true;
    this.trailers = UNSUPPORTED_MEDIA;
    this.#conn.pump(this);
  }
}

/** One HTTP/2 connection; `onStream` gets each new stream once its request headers are in. */
export class H2Connection {
  readonly #socket: Duplex;
  readonly #onStream: (stream: H2Stream) => void;
  readonly #streams = new Map<number, H2Stream>();
  readonly #hpack = new HpackDecoder();
  #buffered: Buffer = Buffer.alloc(0);
  #preface = true;
  #out: Buffer[] = [];
  #flushing = false;
  #lastId = 0;
  #window = DEFAULT_WINDOW;
  #peerWindow = DEFAULT_WINDOW;
  #peerMaxFrame = MAX_FRAME;
  #receiveUsed = 0;
  /** Streams waiting for connection window. */
  readonly #blocked = new Set<H2Stream>();
  /** A header block continued in CONTINUATION frames. */
  #continuing: { id: number; flags: number; parts: Buffer[]; bytes: number } | undefined;
  #goingAway = false;
  #closed = false;
  readonly #onClose: () => void;

  constructor(socket: Duplex, onStream: (stream: H2Stream) => void, onClose: () => void) {
    this.#socket = socket;
    this.#onStream = onStream;
    this.#onClose = onClose;
    // Our settings: initial stream window; then the connection window up to the same size.
    const settings = Buffer.alloc(6);
    settings.writeUInt16BE(4, 0);
    settings.writeUInt32BE(RECEIVE_WINDOW, 2);
    this.frame(SETTINGS, 0, 0, settings);
    this.#windowUpdate(0, RECEIVE_WINDOW - DEFAULT_WINDOW);
    socket.on('data', (chunk: Buffer) => this.#read(chunk));
    socket.on('error', () => undefined);
    socket.on('close', () => this.#gone());
    socket.on('end', () => this.#gone());
    socket.resume();
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Graceful end: GOAWAY, then the socket ends once the open streams are done. */
  close(): void {
    if (this.#closed || this.#goingAway) return;
    this.#goingAway = true;
    const body = Buffer.alloc(8);
    body.writeUInt32BE(this.#lastId, 0);
    body.writeUInt32BE(NO_ERROR, 4);
    this.frame(GOAWAY, 0, 0, body);
    this.#maybeEnd();
  }

  destroy(): void {
    this.#socket.destroy();
    this.#gone();
  }

  /** Queues a frame; everything queued in this turn leaves in one socket write. */
  frame(type: number, flags: number, id: number, payload: Buffer): void {
    if (this.#closed) return;
    this.#out.push(frameHeader(payload.length, type, flags, id), payload);
    if (!this.#flushing) {
      this.#flushing = true;
      process.nextTick(() => this.#flush());
    }
  }

  #flush(): void {
    this.#flushing = false;
    const out = this.#out;
    this.#out = [];
    if (this.#closed || out.length === 0) return;
    this.#socket.write(out.length === 1 ? (out[0] as Buffer) : Buffer.concat(out));
  }

  /** Sends what the windows allow of `s`'s queue, then its trailers. */
  pump(s: H2Stream): void {
    while (s.queue.length > 0) {
      const head = s.queue[0] as Buffer;
      const n = Math.min(head.length, s.window, this.#window, this.#peerMaxFrame);
      if (n <= 0) {
        if (this.#window <= 0) this.#blocked.add(s);
        return;
      }
      this.frame(DATA, 0, s.id, n === head.length ? head : head.subarray(0, n));
      if (n === head.length) s.queue.shift();
      else s.queue[0] = head.subarray(n);
      s.window -= n;
      this.#window -= n;
      const before = s.queuedBytes;
      s.queuedBytes -= n;
      if (before >= STREAM_HIGH_WATER && s.queuedBytes < STREAM_HIGH_WATER) s.onDrain();
    }
    if (s.trailers !== undefined && !s.closed) {
      this.frame(HEADERS, END_HEADERS | END_STREAM, s.id, s.trailers);
      s.trailers = undefined;
      // A complete answer: ask a client still sending to stop (RFC 9113 §8.1).
      if (!s.remoteEnded) this.#rst(s.id, NO_ERROR);
      this.#close(s, false);
    }
  }

  #rst(id: number, code: number): void {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(code, 0);
    this.frame(RST_STREAM, 0, id, b);
  }

  #windowUpdate(id: number, n: number): void {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(n, 0);
    this.frame(WINDOW_UPDATE, 0, id, b);
  }

  #close(s: H2Stream, reset: boolean): void {
    if (s.closed) return;
    s.closed = true;
    this.#streams.delete(s.id);
    this.#blocked.delete(s);
    if (reset) {
      try {
        s.onReset();
      } catch {
        // the handler's clean-up failed; the stream is gone either way
      }
    }
    this.#maybeEnd();
  }

  #maybeEnd(): void {
    if (this.#goingAway && this.#streams.size === 0 && !this.#closed) {
      this.#flush();
      this.#socket.end();
    }
  }

  #gone(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const s of [...this.#streams.values()]) this.#close(s, true);
    this.#onClose();
  }

  #fail(err: unknown): void {
    const code = err instanceof H2Error ? err.code : PROTOCOL_ERROR;
    const body = Buffer.alloc(8);
    body.writeUInt32BE(this.#lastId, 0);
    body.writeUInt32BE(code, 4);
    this.frame(GOAWAY, 0, 0, body);
    this.#flush();
    this.#socket.end();
    this.#gone();
  }

  #read(chunk: Buffer): void {
    if (this.#closed) return;
    let buf = this.#buffered.length === 0 ? chunk : Buffer.concat([this.#buffered, chunk]);
    try {
      if (this.#preface) {
        if (buf.length < PREFACE.length) {
          this.#buffered = buf;
          return;
        }
        if (!buf.subarray(0, PREFACE.length).equals(PREFACE))
          throw new H2Error(PROTOCOL_ERROR, 'bad preface');
        this.#preface = false;
        buf = buf.subarray(PREFACE.length);
      }
      while (buf.length >= FRAME_HEADER) {
        const length = buf.readUIntBE(0, 3);
        if (length > MAX_FRAME) throw new H2Error(FRAME_SIZE_ERROR, 'frame too large');
        if (buf.length < FRAME_HEADER + length) break;
        const type = buf[3] as number;
        const flags = buf[4] as number;
        const id = buf.readUInt32BE(5) & 0x7fffffff;
        const payload = buf.subarray(FRAME_HEADER, FRAME_HEADER + length);
        buf = buf.subarray(FRAME_HEADER + length);
        this.#frame(type, flags, id, payload);
        if (this.#closed) return;
      }
      this.#buffered = buf;
    } catch (err) {
      this.#fail(err);
    }
  }

  #frame(type: number, flags: number, id: number, payload: Buffer): void {
    if (this.#continuing !== undefined && (type !== CONTINUATION || id !== this.#continuing.id)) {
      throw new H2Error(PROTOCOL_ERROR, 'expected CONTINUATION');
    }
    switch (type) {
      case DATA:
        return this.#data(flags, id, payload);
      case HEADERS:
        return this.#headers(flags, id, payload);
      case CONTINUATION: {
        const c = this.#continuing;
        if (c === undefined) throw new H2Error(PROTOCOL_ERROR, 'unexpected CONTINUATION');
        c.parts.push(payload);
        c.bytes += payload.length;
        if (c.bytes > MAX_HEADER_BLOCK) throw new H2Error(PROTOCOL_ERROR, 'header block too large');
        if (flags & END_HEADERS) {
          this.#continuing = undefined;
          this.#headerBlock(c.flags, c.id, Buffer.concat(c.parts));
        }
        return;
      }
      case RST_STREAM: {
        const s = this.#streams.get(id);
        if (s !== undefined) this.#close(s, true);
        return;
      }
      case SETTINGS:
        return this.#settings(flags, id, payload);
      case PING:
        if (payload.length !== 8) throw new H2Error(FRAME_SIZE_ERROR, 'bad PING');
        if (!(flags & ACK)) this.frame(PING, ACK, 0, Buffer.from(payload));
        return;
      case GOAWAY:
        this.#goingAway = true;
        this.#maybeEnd();
        return;
      case WINDOW_UPDATE:
        return this.#windowUpdated(id, payload);
      case PUSH_PROMISE:
        throw new H2Error(PROTOCOL_ERROR, 'PUSH_PROMISE from a client');
      default:
        return; // PRIORITY and unknown types
    }
  }

  #settings(flags: number, id: number, payload: Buffer): void {
    if (id !== 0) throw new H2Error(PROTOCOL_ERROR, 'SETTINGS on a stream');
    if (flags & ACK) return;
    if (payload.length % 6 !== 0) throw new H2Error(FRAME_SIZE_ERROR, 'bad SETTINGS');
    for (let p = 0; p < payload.length; p += 6) {
      const key = payload.readUInt16BE(p);
      const value = payload.readUInt32BE(p + 2);
      if (key === 4) {
        if (value > MAX_WINDOW) throw new H2Error(FLOW_CONTROL_ERROR, 'window too large');
        const delta = value - this.#peerWindow;
        this.#peerWindow = value;
        for (const s of this.#streams.values()) s.window += delta;
      } else if (key === 5) {
        if (value < MAX_FRAME || value > 16_777_215) throw new H2Error(PROTOCOL_ERROR, 'bad max frame size');
        this.#peerMaxFrame = value;
      }
    }
    this.frame(SETTINGS, ACK, 0, Buffer.alloc(0));
    for (const s of [...this.#streams.values()]) this.pump(s);
  }

  #windowUpdated(id: number, payload: Buffer): void {
    if (payload.length !== 4) throw new H2Error(FRAME_SIZE_ERROR, 'bad WINDOW_UPDATE');
    const n = payload.readUInt32BE(0) & 0x7fffffff;
    if (id === 0) {
      if (n === 0) throw new H2Error(PROTOCOL_ERROR, 'WINDOW_UPDATE of 0');
      this.#window += n;
      if (this.#window > MAX_WINDOW) throw new H2Error(FLOW_CONTROL_ERROR, 'window overflow');
      const waiting = [...this.#blocked];
      this.#blocked.clear();
      for (const s of waiting) this.pump(s);
      return;
    }
    const s = this.#streams.get(id);
    if (s === undefined) return;
    s.window += n;
    this.pump(s);
  }

  #data(flags: number, id: number, payload: Buffer): void {
    // Every DATA byte counts against the connection window, also for streams already gone.
    this.#receiveUsed += payload.length;
    if (this.#receiveUsed >= RECEIVE_WINDOW / 2) {
      this.#windowUpdate(0, this.#receiveUsed);
      this.#receiveUsed = 0;
    }
    const s = this.#streams.get(id);
    if (s === undefined || s.remoteEnded) return;
    s.receiveUsed += payload.length;
    if (s.receiveUsed >= RECEIVE_WINDOW / 2 && !(flags & END_STREAM)) {
      this.#windowUpdate(id, s.receiveUsed);
      s.receiveUsed = 0;
    }
    let data = payload;
    if (flags & PADDED) {
      const pad = payload[0] as number;
      if (pad >= payload.length) throw new H2Error(PROTOCOL_ERROR, 'bad padding');
      data = payload.subarray(1, payload.length - pad);
    }
    if (data.length > 0) this.#guard(s, () => s.onData(data));
    if (flags & END_STREAM && !s.closed) {
      s.remoteEnded = true;
      this.#guard(s, () => s.onEnd());
    }
  }

  #headers(flags: number, id: number, payload: Buffer): void {
    let block = payload;
    if (flags & PADDED) {
      const pad = block[0] as number;
      if (pad >= block.length) throw new H2Error(PROTOCOL_ERROR, 'bad padding');
      block = block.subarray(1, block.length - pad);
    }
    if (flags & PRIORITY) block = block.subarray(5);
    if (!(flags & END_HEADERS)) {
      this.#continuing = { id, flags, parts: [Buffer.from(block)], bytes: block.length };
      return;
    }
    this.#headerBlock(flags, id, block);
  }

  #headerBlock(flags: number, id: number, block: Buffer): void {
    // Decoded even when the stream is refused, to keep the HPACK table in step.
    const headers = this.#hpack.decode(block);
    const existing = this.#streams.get(id);
    if (existing !== undefined) {
      // Trailers from the client: gRPC clients send none; treat as the end of its side.
      if (flags & END_STREAM) {
        existing.remoteEnded = true;
        this.#guard(existing, () => existing.onEnd());
      }
      return;
    }
    if (id % 2 === 0 || id <= this.#lastId) throw new H2Error(PROTOCOL_ERROR, `bad stream id ${id}`);
    this.#lastId = id;
    if (this.#goingAway) {
      this.#rst(id, 7); // REFUSED_STREAM
      return;
    }
    const s = new H2Stream(this, id, headers, this.#peerWindow);
    this.#streams.set(id, s);
    this.#guard(s, () => this.#onStream(s));
    if (flags & END_STREAM && !s.closed) {
      s.remoteEnded = true;
      this.#guard(s, () => s.onEnd());
    }
  }

  /** Runs a stream's callback; if it throws, that stream is reset (INTERNAL_ERROR), not the connection. */
  #guard(s: H2Stream, fn: () => void): void {
    try {
      fn();
    } catch {
      if (s.closed) return;
      this.#rst(s.id, INTERNAL_ERROR);
      this.#close(s, true);
    }
  }
}
