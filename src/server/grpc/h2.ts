/**
 * The HTTP/2 server side that gRPC needs, on a plain socket (or a TLS one): frames, HPACK decoding,
 * flow control, PING, SETTINGS, RST_STREAM and GOAWAY — what `node:http2` did, without its per-stream
 * objects and with one socket write per event-loop turn (an answer's headers, message and trailers
 * leave together; `node:http2` sends trailers a turn after the data).
 *
 * Scope (RFC 9113, server role, gRPC's use of it): client-initiated streams; no server push; header
 * blocks decoded with the client's HPACK dynamic table (RFC 7541), answers encoded without one
 * (indexed `:status: 200`, literals "without indexing"); priorities ignored. Send windows follow the
 * client's SETTINGS and WINDOW_UPDATEs; receive windows are enforced and replenished as data arrives
 * (a request's bytes are bounded by the message limit of transport.ts, per stream).
 *
 * What a peer can make a connection hold is bounded (docs/serve.md, "Limits of the HTTP/2 layer"):
 * streams ({@link MAX_CONCURRENT_STREAMS}, advertised; more are refused with REFUSED_STREAM), a
 * header list ({@link MAX_HEADER_LIST}, advertised; a larger one ends that call with
 * RESOURCE_EXHAUSTED), a header block's raw bytes and CONTINUATION frames, the HPACK table (4 KiB),
 * a partial frame (16 KiB), answers the peer does not read (reading stops while the socket's
 * queue is above {@link OUT_HIGH_WATER}); stream resets and frames that cost work but carry no
 * request (PING, SETTINGS, PRIORITY, empty DATA, unknown types) are rate-limited, and a peer over
 * the rate gets GOAWAY ENHANCE_YOUR_CALM; a connection that does not send the preface and SETTINGS
 * in {@link PREFACE_TIMEOUT_MS} is closed. Protocol errors close the connection with GOAWAY and the
 * error's code; nothing a peer sends throws out of this module.
 */
import type { Duplex } from 'node:stream';
import { type Clock, type TimerHandle, systemClock } from '../../clock.js';
import { H2Error, HpackDecoder, writeInt } from './hpack.js';

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');
const FRAME_HEADER = 9;
const DATA = 0;
const HEADERS = 1;
const PRIORITY_FRAME = 2;
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
const SETTINGS_TIMEOUT = 4;
const FRAME_SIZE_ERROR = 6;
const REFUSED_STREAM = 7;
const ENHANCE_YOUR_CALM = 11;
const SETTINGS_ENABLE_PUSH = 2;
const SETTINGS_MAX_CONCURRENT_STREAMS = 3;
const SETTINGS_INITIAL_WINDOW_SIZE = 4;
const SETTINGS_MAX_FRAME_SIZE = 5;
const SETTINGS_MAX_HEADER_LIST_SIZE = 6;
const DEFAULT_WINDOW = 65_535;
const MAX_WINDOW = 2 ** 31 - 1;
/** gRPC's RESOURCE_EXHAUSTED, for a header list over the limit. */
const GRPC_RESOURCE_EXHAUSTED = 8;

/**
 * Our receive windows (connection and each stream): 16 MiB, replenished once half is consumed, so a
 * 1.5 MiB put or a burst of requests never waits for a round trip. It does not bound memory (the
 * bytes are handed on as they arrive); the message limit and the stream limit do.
 */
const RECEIVE_WINDOW = 16 * 1024 * 1024;
/** Largest frame we accept (the protocol's default; we do not raise it). */
const MAX_FRAME = 16_384;
/**
 * Streams open at once on one connection, advertised in SETTINGS. 256: four times the bench's 64
 * calls in flight; grpc-go and Node's client queue calls beyond the peer's limit instead of failing
 * them, and etcd's clients multiplex all watches of a client on one stream. With the message limit
 * (2 MiB) it bounds a connection's request bytes held at about 512 MiB worst case.
 */
export const MAX_CONCURRENT_STREAMS = 256;
/**
 * Largest header list accepted (RFC 9113 §6.5.2 size: names, values, 32 per field), advertised in
 * SETTINGS. 16 KiB: what Node's HTTP/1 server allows a request head; a gRPC call to etcd sends a few
 * hundred bytes (path, content type, user agent, timeout, token).
 */
export const MAX_HEADER_LIST = 16 * 1024;
/**
 * Largest header block (HEADERS and its CONTINUATIONs) buffered before it is decoded, and the most
 * CONTINUATION frames one block may have: past either the connection is closed (ENHANCE_YOUR_CALM).
 * Four times the header-list limit, as HPACK never needs more bytes than the list it encodes plus
 * its few bytes per field; a client splits a block only where the frame size makes it.
 */
export const MAX_HEADER_BLOCK = 4 * MAX_HEADER_LIST;
export const MAX_CONTINUATIONS = 16;
/** Queued answer bytes of one stream above which `write` reports back-pressure. */
const STREAM_HIGH_WATER = 1024 * 1024;
/**
 * Answer bytes queued for a peer that does not open its window (or does not read): a stream whose
 * handler writes on past back-pressure (a watch on a busy prefix) is reset with ENHANCE_YOUR_CALM
 * once a write finds 16 MiB already queued on the stream, or — after `write` returned false — 64 MiB
 * on the whole connection (its streams' queues, this turn's frames and the socket's). A first write
 * is always taken: a unary answer, however large, is one message into an empty queue. etcd's
 * clients then watch again from the last revision they saw.
 */
export const STREAM_QUEUE_LIMIT = 16 * 1024 * 1024;
export const CONNECTION_QUEUE_LIMIT = 64 * 1024 * 1024;
/**
 * Bytes queued on the socket (the peer is not reading) above which we stop reading the peer: it gets
 * no more answers, PING or SETTINGS acknowledgements queued until it reads, and streams see
 * back-pressure. 4 MiB: several maximal answers (a 1.5 MiB value, a snapshot chunk) in flight.
 */
export const OUT_HIGH_WATER = 4 * 1024 * 1024;
/**
 * Stream resets by the client (RST_STREAM) and streams we refuse: a burst of 1000, then 100 per
 * second (nghttp2 allows 1000 and 33/s since the "rapid reset" attack, CVE-2023-44487); above it,
 * GOAWAY ENHANCE_YOUR_CALM. A client cancels a call with a reset; none cancels 100 a second for long.
 */
export const RESET_BURST = 1000;
export const RESETS_PER_SECOND = 100;
/**
 * Frames that cost us work but carry no request — PING and SETTINGS (each answered), PRIORITY,
 * DATA without bytes or END_STREAM, frames of unknown type (CVE-2019-9512, -9515, -9518): a burst of
 * 10,000, then 1,000 per second; above it, GOAWAY ENHANCE_YOUR_CALM. gRPC clients send a PING per
 * keep-alive period and one SETTINGS per connection.
 */
export const CONTROL_BURST = 10_000;
export const CONTROL_PER_SECOND = 1000;
/** The preface and the first SETTINGS must arrive within this after the connection is handed over. */
export const PREFACE_TIMEOUT_MS = 10_000;
/** After a GOAWAY that closes the connection, the socket is destroyed if the peer has not closed it. */
const LINGER_MS = 1000;

/** A literal header field without indexing, with a literal name (RFC 7541 §6.2.2). */
function literal(name: string, value: string): Buffer {
  const bytes: number[] = [0];
  writeInt(name.length, 7, 0, bytes);
  const v = Buffer.from(value, 'latin1');
  const head = Buffer.from(bytes);
  const vl: number[] = [];
  writeInt(v.length, 7, 0, vl);
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
  /** `write` returned false; `onDrain` is due once both queues are below their marks. */
  wantsDrain = false;

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
    // A handler writing on after `write` said false (`wantsDrain`), or into its own full queue; only
    // such a write pays for the count.
    if (
      (this.queuedBytes > 0 && this.queuedBytes + message.length > STREAM_QUEUE_LIMIT) ||
      (this.wantsDrain && this.#conn.backlog() > CONNECTION_QUEUE_LIMIT)
    ) {
      this.#conn.overflow(this);
      return false;
    }
    this.respond();
    this.queue.push(message);
    this.queuedBytes += message.length;
    this.#conn.pump(this);
    if (this.queuedBytes < STREAM_HIGH_WATER && this.#conn.writable) return true;
    this.wantsDrain = true;
    return false;
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

/** A token bucket: `burst` tokens, refilled at `perSecond`. */
class Rate {
  readonly #burst: number;
  readonly #perMs: number;
  readonly #clock: Clock;
  #tokens: number;
  #at: number;

  constructor(burst: number, perSecond: number, clock: Clock) {
    this.#burst = burst;
    this.#perMs = perSecond / 1000;
    this.#clock = clock;
    this.#tokens = burst;
    this.#at = clock.monotonic();
  }

  /** Takes a token; false when there is none. */
  take(): boolean {
    if (this.#tokens < 1) {
      const now = this.#clock.monotonic();
      this.#tokens = Math.min(this.#burst, this.#tokens + (now - this.#at) * this.#perMs);
      this.#at = now;
      if (this.#tokens < 1) return false;
    }
    this.#tokens--;
    return true;
  }
}

/** A connection's state, for tests and metrics. */
export interface H2ConnectionStats {
  readonly streams: number;
  readonly bufferedBytes: number;
  readonly queuedBytes: number;
  readonly paused: boolean;
}

/** One HTTP/2 connection; `onStream` gets each new stream once its request headers are in. */
export class H2Connection {
  readonly #socket: Duplex;
  readonly #onStream: (stream: H2Stream) => void;
  readonly #onClose: () => void;
  readonly #clock: Clock;
  readonly #streams = new Map<number, H2Stream>();
  readonly #hpack = new HpackDecoder();
  /** Bytes read but not yet a whole frame (a list, joined only once the frame is complete). */
  #pending: Buffer[] = [];
  #pendingBytes = 0;
  /** Bytes the next step needs: the preface, a frame header, or a whole frame. */
  #need = PREFACE.length;
  #state: 'preface' | 'settings' | 'open' = 'preface';
  #out: Buffer[] = [];
  /** Bytes in `#out`: frames of this turn, written at its end. */
  #outBytes = 0;
  #flushing = false;
  #lastId = 0;
  /** Our send window of the connection. */
  #window = DEFAULT_WINDOW;
  #peerWindow = DEFAULT_WINDOW;
  #peerMaxFrame = MAX_FRAME;
  /** What the peer may still send on the connection before our next WINDOW_UPDATE. */
  #receiveWindow = RECEIVE_WINDOW;
  /** Streams waiting for connection window. */
  readonly #blocked = new Set<H2Stream>();
  /** A header block continued in CONTINUATION frames. */
  #continuing: { id: number; flags: number; parts: Buffer[]; bytes: number; frames: number } | undefined;
  readonly #resets: Rate;
  readonly #control: Rate;
  /** Reading stopped: the socket's queue is above OUT_HIGH_WATER. */
  #paused = false;
  #prefaceTimer: TimerHandle | undefined;
  #goingAway = false;
  /** We ended our side of the socket. */
  #ended = false;
  #closed = false;

  constructor(
    socket: Duplex,
    onStream: (stream: H2Stream) => void,
    onClose: () => void,
    clock: Clock = systemClock,
  ) {
    this.#socket = socket;
    this.#onStream = onStream;
    this.#onClose = onClose;
    this.#clock = clock;
    this.#resets = new Rate(RESET_BURST, RESETS_PER_SECOND, clock);
    this.#control = new Rate(CONTROL_BURST, CONTROL_PER_SECOND, clock);
    // Our settings; then the connection window up to the same size as a stream's.
    const settings = Buffer.alloc(24);
    settings.writeUInt16BE(SETTINGS_MAX_CONCURRENT_STREAMS, 0);
    settings.writeUInt32BE(MAX_CONCURRENT_STREAMS, 2);
    settings.writeUInt16BE(SETTINGS_INITIAL_WINDOW_SIZE, 6);
    settings.writeUInt32BE(RECEIVE_WINDOW, 8);
    settings.writeUInt16BE(SETTINGS_MAX_HEADER_LIST_SIZE, 12);
    settings.writeUInt32BE(MAX_HEADER_LIST, 14);
    settings.writeUInt16BE(SETTINGS_ENABLE_PUSH, 18);
    settings.writeUInt32BE(0, 20);
    this.frame(SETTINGS, 0, 0, settings);
    this.#windowUpdate(0, RECEIVE_WINDOW - DEFAULT_WINDOW);
    this.#prefaceTimer = clock.setTimeout(() => {
      this.#prefaceTimer = undefined;
      if (this.#state !== 'open')
        this.#fail(new H2Error(SETTINGS_TIMEOUT, 'no preface and SETTINGS in time'));
    }, PREFACE_TIMEOUT_MS);
    socket.on('data', (chunk: Buffer) => this.#read(chunk));
    socket.on('drain', () => this.#drained());
    socket.on('error', () => undefined);
    socket.on('close', () => this.#gone());
    socket.on('end', () => this.#gone());
    socket.resume();
  }

  get closed(): boolean {
    return this.#closed;
  }

  get stats(): H2ConnectionStats {
    return {
      streams: this.#streams.size,
      bufferedBytes: this.#pendingBytes,
      queuedBytes: this.#socket.writableLength,
      paused: this.#paused,
    };
  }

  /** Graceful end: GOAWAY, then the socket ends once the open streams are done. */
  close(): void {
    if (this.#closed || this.#goingAway) return;
    this.#goingAway = true;
    this.#goaway(NO_ERROR);
    this.#maybeEnd();
  }

  destroy(): void {
    this.#socket.destroy();
    this.#gone();
  }

  /** Queues a frame; everything queued in this turn leaves in one socket write. */
  frame(type: number, flags: number, id: number, payload: Buffer): void {
    if (this.#closed || this.#ended) return;
    this.#out.push(frameHeader(payload.length, type, flags, id), payload);
    this.#outBytes += FRAME_HEADER + payload.length;
    if (!this.#flushing) {
      this.#flushing = true;
      process.nextTick(() => this.#flush());
    }
  }

  /** Answer bytes waiting for the peer: on the socket, and on every stream for its windows. */
  backlog(): number {
    let n = this.#socket.writableLength + this.#outBytes;
    for (const s of this.#streams.values()) n += s.queuedBytes;
    return n;
  }

  /** A stream over its queue limit: reset with ENHANCE_YOUR_CALM; its handler cleans up. */
  overflow(s: H2Stream): void {
    this.#streamError(s, ENHANCE_YOUR_CALM);
  }

  /** False while the socket's queue is above its mark (a stream then gets `onDrain` when it falls). */
  get writable(): boolean {
    return !this.#paused && this.#socket.writableLength + this.#outBytes < OUT_HIGH_WATER;
  }

  #flush(): void {
    this.#flushing = false;
    const out = this.#out;
    this.#out = [];
    this.#outBytes = 0;
    if (this.#closed || out.length === 0) return;
    this.#socket.write(out.length === 1 ? (out[0] as Buffer) : Buffer.concat(out));
    if (!this.#paused && this.#socket.writableLength >= OUT_HIGH_WATER) {
      // The peer is not reading what we send: stop reading what it sends until it does.
      this.#paused = true;
      this.#socket.pause();
    }
  }

  #drained(): void {
    if (this.#closed) return;
    if (this.#paused) {
      this.#paused = false;
      this.#socket.resume();
    }
    for (const s of [...this.#streams.values()]) this.#maybeDrain(s);
  }

  #maybeDrain(s: H2Stream): void {
    if (!s.wantsDrain || s.closed || s.queuedBytes >= STREAM_HIGH_WATER || !this.writable) return;
    s.wantsDrain = false;
    this.#guard(s, () => s.onDrain());
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
      s.queuedBytes -= n;
    }
    if (s.trailers !== undefined && !s.closed) {
      this.frame(HEADERS, END_HEADERS | END_STREAM, s.id, s.trailers);
      s.trailers = undefined;
      // A complete answer: ask a client still sending to stop (RFC 9113 §8.1).
      if (!s.remoteEnded) this.#rst(s.id, NO_ERROR);
      this.#close(s, false);
      return;
    }
    if (s.wantsDrain) this.#maybeDrain(s);
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

  #goaway(code: number): void {
    const body = Buffer.alloc(8);
    body.writeUInt32BE(this.#lastId, 0);
    body.writeUInt32BE(code, 4);
    this.frame(GOAWAY, 0, 0, body);
  }

  #close(s: H2Stream, reset: boolean): void {
    if (s.closed) return;
    s.closed = true;
    this.#streams.delete(s.id);
    this.#blocked.delete(s);
    s.queue.length = 0;
    s.queuedBytes = 0;
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
    if (this.#goingAway && this.#streams.size === 0 && !this.#closed) this.#end();
  }

  /** Sends what is queued and ends our side; the socket is destroyed if the peer does not close soon. */
  #end(): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#flush();
    this.#socket.end();
    const socket = this.#socket;
    this.#clock.setTimeout(() => socket.destroy(), LINGER_MS);
  }

  #gone(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#prefaceTimer !== undefined) this.#clock.clearTimeout(this.#prefaceTimer);
    this.#pending = [];
    this.#pendingBytes = 0;
    this.#continuing = undefined;
    for (const s of [...this.#streams.values()]) this.#close(s, true);
    this.#onClose();
  }

  /** A connection error: GOAWAY with its code, and the connection ends. */
  #fail(err: unknown): void {
    if (this.#closed) return;
    this.#goaway(err instanceof H2Error ? err.code : INTERNAL_ERROR);
    this.#end();
    this.#gone();
  }

  #read(chunk: Buffer): void {
    if (this.#closed) return;
    this.#pending.push(chunk);
    this.#pendingBytes += chunk.length;
    if (this.#pendingBytes < this.#need) return;
    let buf = this.#pending.length === 1 ? chunk : Buffer.concat(this.#pending, this.#pendingBytes);
    try {
      if (this.#state === 'preface') {
        if (!buf.subarray(0, PREFACE.length).equals(PREFACE))
          throw new H2Error(PROTOCOL_ERROR, 'bad preface');
        this.#state = 'settings';
        buf = buf.subarray(PREFACE.length);
      }
      this.#need = FRAME_HEADER;
      while (buf.length >= FRAME_HEADER) {
        const length = buf.readUIntBE(0, 3);
        if (length > MAX_FRAME) throw new H2Error(FRAME_SIZE_ERROR, 'frame too large');
        if (buf.length < FRAME_HEADER + length) {
          this.#need = FRAME_HEADER + length;
          break;
        }
        const type = buf[3] as number;
        const flags = buf[4] as number;
        const id = buf.readUInt32BE(5) & 0x7fffffff;
        const payload = buf.subarray(FRAME_HEADER, FRAME_HEADER + length);
        buf = buf.subarray(FRAME_HEADER + length);
        this.#frame(type, flags, id, payload);
        if (this.#closed) return;
      }
      if (buf.length < FRAME_HEADER) this.#need = FRAME_HEADER;
      this.#pending = buf.length === 0 ? [] : [buf];
      this.#pendingBytes = buf.length;
    } catch (err) {
      this.#fail(err);
    }
  }

  #frame(type: number, flags: number, id: number, payload: Buffer): void {
    if (this.#state === 'settings') {
      // RFC 9113 §3.4: the preface's SETTINGS frame comes first.
      if (type !== SETTINGS || flags & ACK)
        throw new H2Error(PROTOCOL_ERROR, 'the first frame is not SETTINGS');
      this.#state = 'open';
      if (this.#prefaceTimer !== undefined) {
        this.#clock.clearTimeout(this.#prefaceTimer);
        this.#prefaceTimer = undefined;
      }
    }
    if (this.#continuing !== undefined && (type !== CONTINUATION || id !== this.#continuing.id)) {
      throw new H2Error(PROTOCOL_ERROR, 'expected CONTINUATION');
    }
    switch (type) {
      case DATA:
        return this.#data(flags, id, payload);
      case HEADERS:
        return this.#headers(flags, id, payload);
      case CONTINUATION:
        return this.#continuation(flags, payload);
      case RST_STREAM:
        return this.#reset(id, payload);
      case SETTINGS:
        return this.#settings(flags, id, payload);
      case PING:
        if (id !== 0) throw new H2Error(PROTOCOL_ERROR, 'PING on a stream');
        if (payload.length !== 8) throw new H2Error(FRAME_SIZE_ERROR, 'bad PING');
        if (flags & ACK) return;
        this.#calm(this.#control, 'PING flood');
        this.frame(PING, ACK, 0, Buffer.from(payload));
        return;
      case GOAWAY:
        if (id !== 0) throw new H2Error(PROTOCOL_ERROR, 'GOAWAY on a stream');
        if (payload.length < 8) throw new H2Error(FRAME_SIZE_ERROR, 'bad GOAWAY');
        this.#goingAway = true;
        this.#maybeEnd();
        return;
      case WINDOW_UPDATE:
        return this.#windowUpdated(id, payload);
      case PUSH_PROMISE:
        throw new H2Error(PROTOCOL_ERROR, 'PUSH_PROMISE from a client');
      case PRIORITY_FRAME:
        if (id === 0) throw new H2Error(PROTOCOL_ERROR, 'PRIORITY on stream 0');
        if (payload.length !== 5) throw new H2Error(FRAME_SIZE_ERROR, 'bad PRIORITY');
        this.#calm(this.#control, 'PRIORITY flood');
        return;
      default:
        this.#calm(this.#control, 'flood of unknown frames');
        return;
    }
  }

  /** Takes a token from `rate`; when there is none, the connection ends with ENHANCE_YOUR_CALM. */
  #calm(rate: Rate, what: string): void {
    if (!rate.take()) throw new H2Error(ENHANCE_YOUR_CALM, what);
  }

  #reset(id: number, payload: Buffer): void {
    if (id === 0) throw new H2Error(PROTOCOL_ERROR, 'RST_STREAM on stream 0');
    if (payload.length !== 4) throw new H2Error(FRAME_SIZE_ERROR, 'bad RST_STREAM');
    if (id > this.#lastId) throw new H2Error(PROTOCOL_ERROR, 'RST_STREAM on an idle stream');
    this.#calm(this.#resets, 'too many stream resets');
    const s = this.#streams.get(id);
    if (s !== undefined) this.#close(s, true);
  }

  #settings(flags: number, id: number, payload: Buffer): void {
    if (id !== 0) throw new H2Error(PROTOCOL_ERROR, 'SETTINGS on a stream');
    if (flags & ACK) {
      if (payload.length !== 0) throw new H2Error(FRAME_SIZE_ERROR, 'SETTINGS ACK with a payload');
      return;
    }
    if (payload.length % 6 !== 0) throw new H2Error(FRAME_SIZE_ERROR, 'bad SETTINGS');
    this.#calm(this.#control, 'SETTINGS flood');
    for (let p = 0; p < payload.length; p += 6) {
      const key = payload.readUInt16BE(p);
      const value = payload.readUInt32BE(p + 2);
      if (key === SETTINGS_INITIAL_WINDOW_SIZE) {
        if (value > MAX_WINDOW) throw new H2Error(FLOW_CONTROL_ERROR, 'window too large');
        const delta = value - this.#peerWindow;
        this.#peerWindow = value;
        for (const s of this.#streams.values()) {
          s.window += delta;
          if (s.window > MAX_WINDOW) throw new H2Error(FLOW_CONTROL_ERROR, 'window overflow');
        }
      } else if (key === SETTINGS_MAX_FRAME_SIZE) {
        if (value < MAX_FRAME || value > 16_777_215) throw new H2Error(PROTOCOL_ERROR, 'bad max frame size');
        this.#peerMaxFrame = value;
      } else if (key === SETTINGS_ENABLE_PUSH) {
        if (value > 1) throw new H2Error(PROTOCOL_ERROR, 'bad ENABLE_PUSH');
      }
      // HEADER_TABLE_SIZE (1) needs nothing: answers are encoded without a dynamic table.
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
    if (id > this.#lastId) throw new H2Error(PROTOCOL_ERROR, 'WINDOW_UPDATE on an idle stream');
    const s = this.#streams.get(id);
    if (s === undefined) return;
    if (n === 0) {
      this.#streamError(s, PROTOCOL_ERROR);
      return;
    }
    s.window += n;
    if (s.window > MAX_WINDOW) {
      this.#streamError(s, FLOW_CONTROL_ERROR);
      return;
    }
    this.pump(s);
  }

  /** Ends one stream with RST_STREAM `code`; the connection goes on. */
  #streamError(s: H2Stream, code: number): void {
    this.#rst(s.id, code);
    this.#close(s, true);
  }

  #data(flags: number, id: number, payload: Buffer): void {
    if (id === 0) throw new H2Error(PROTOCOL_ERROR, 'DATA on stream 0');
    if (id > this.#lastId) throw new H2Error(PROTOCOL_ERROR, 'DATA on an idle stream');
    // Every DATA byte counts against the connection window, also for streams already gone.
    this.#receiveWindow -= payload.length;
    if (this.#receiveWindow < 0) throw new H2Error(FLOW_CONTROL_ERROR, 'data beyond the connection window');
    if (this.#receiveWindow <= RECEIVE_WINDOW / 2) {
      this.#windowUpdate(0, RECEIVE_WINDOW - this.#receiveWindow);
      this.#receiveWindow = RECEIVE_WINDOW;
    }
    if (payload.length === 0 && !(flags & END_STREAM)) this.#calm(this.#control, 'empty DATA flood');
    const s = this.#streams.get(id);
    if (s === undefined) return; // closed: its DATA was in flight
    if (s.remoteEnded) {
      this.#streamError(s, 5); // STREAM_CLOSED
      return;
    }
    s.receiveUsed += payload.length;
    if (s.receiveUsed > RECEIVE_WINDOW) {
      this.#streamError(s, FLOW_CONTROL_ERROR);
      return;
    }
    if (s.receiveUsed >= RECEIVE_WINDOW / 2 && !(flags & END_STREAM)) {
      this.#windowUpdate(id, s.receiveUsed);
      s.receiveUsed = 0;
    }
    let data = payload;
    if (flags & PADDED) data = unpad(payload);
    if (data.length > 0) this.#guard(s, () => s.onData(data));
    if (flags & END_STREAM && !s.closed) {
      s.remoteEnded = true;
      this.#guard(s, () => s.onEnd());
    }
  }

  #headers(flags: number, id: number, payload: Buffer): void {
    if (id === 0) throw new H2Error(PROTOCOL_ERROR, 'HEADERS on stream 0');
    let block = payload;
    if (flags & PADDED) block = unpad(block);
    if (flags & PRIORITY) {
      if (block.length < 5) throw new H2Error(FRAME_SIZE_ERROR, 'HEADERS too short for its priority');
      block = block.subarray(5);
    }
    if (!(flags & END_HEADERS)) {
      this.#continuing = { id, flags, parts: [Buffer.from(block)], bytes: block.length, frames: 0 };
      return;
    }
    this.#headerBlock(flags, id, block);
  }

  #continuation(flags: number, payload: Buffer): void {
    const c = this.#continuing;
    if (c === undefined) throw new H2Error(PROTOCOL_ERROR, 'unexpected CONTINUATION');
    c.parts.push(Buffer.from(payload));
    c.bytes += payload.length;
    c.frames++;
    // CVE-2024-27316 and its kin: a block that never ends, or in a great many frames.
    if (c.bytes > MAX_HEADER_BLOCK) throw new H2Error(ENHANCE_YOUR_CALM, 'header block too large');
    if (c.frames > MAX_CONTINUATIONS) throw new H2Error(ENHANCE_YOUR_CALM, 'too many CONTINUATION frames');
    if (flags & END_HEADERS) {
      this.#continuing = undefined;
      this.#headerBlock(c.flags, c.id, Buffer.concat(c.parts, c.bytes));
    }
  }

  #headerBlock(flags: number, id: number, block: Buffer): void {
    if (block.length > MAX_HEADER_BLOCK) throw new H2Error(ENHANCE_YOUR_CALM, 'header block too large');
    // Decoded even when the stream is refused, to keep the HPACK table in step.
    const headers = this.#hpack.decode(block, MAX_HEADER_LIST);
    const existing = this.#streams.get(id);
    if (existing !== undefined) {
      // Trailers from the client: gRPC clients send none; a block without END_STREAM is malformed.
      if (!(flags & END_STREAM) || existing.remoteEnded) {
        this.#streamError(existing, PROTOCOL_ERROR);
        return;
      }
      existing.remoteEnded = true;
      this.#guard(existing, () => existing.onEnd());
      return;
    }
    if (id % 2 === 0) throw new H2Error(PROTOCOL_ERROR, `bad stream id ${id}`);
    // A stream we closed (or refused) while the client was still sending: ignored (RFC 9113 §5.1).
    if (id <= this.#lastId) return;
    this.#lastId = id;
    if (this.#goingAway) {
      this.#rst(id, REFUSED_STREAM);
      return;
    }
    if (this.#streams.size >= MAX_CONCURRENT_STREAMS) {
      this.#calm(this.#resets, 'too many refused streams');
      this.#rst(id, REFUSED_STREAM);
      return;
    }
    if (headers === undefined) {
      // Over the header-list limit: that call ends (as HTTP 431 would), the connection goes on.
      this.#calm(this.#resets, 'too many refused streams');
      const status = Buffer.concat([
        GRPC_HEADERS,
        literal('grpc-status', String(GRPC_RESOURCE_EXHAUSTED)),
        literal('grpc-message', `header list larger than ${MAX_HEADER_LIST} bytes`),
      ]);
      this.frame(HEADERS, END_HEADERS | END_STREAM, id, status);
      if (!(flags & END_STREAM)) this.#rst(id, NO_ERROR);
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
      this.#streamError(s, INTERNAL_ERROR);
    }
  }
}

/** A padded frame's payload without its pad length byte and padding. */
function unpad(payload: Buffer): Buffer {
  const pad = payload[0];
  if (pad === undefined || pad >= payload.length) throw new H2Error(PROTOCOL_ERROR, 'bad padding');
  return payload.subarray(1, payload.length - pad);
}
