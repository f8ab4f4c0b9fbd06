/**
 * A raw HTTP/2 client for the tests of serve's own HTTP/2 (h2.ts): it writes exactly the frames a
 * test asks for (including wrong ones) on a real socket, and reads the server's frames as they are.
 * Header blocks are encoded as literals without indexing or Huffman coding, unless a test passes
 * its own bytes; the server's header blocks are decoded with the server's own HPACK decoder (checked
 * against RFC 7541's examples in serve-endpoints.test.ts).
 */
import { connect, type Socket } from 'node:net';
import { HpackDecoder, writeInt } from '../../src/server/grpc/hpack.js';

export const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');
export const T = {
  DATA: 0,
  HEADERS: 1,
  PRIORITY: 2,
  RST_STREAM: 3,
  SETTINGS: 4,
  PUSH_PROMISE: 5,
  PING: 6,
  GOAWAY: 7,
  WINDOW_UPDATE: 8,
  CONTINUATION: 9,
} as const;
export const F = { END_STREAM: 1, ACK: 1, END_HEADERS: 4, PADDED: 8, PRIORITY: 0x20 } as const;
export const E = {
  NO_ERROR: 0,
  PROTOCOL_ERROR: 1,
  FLOW_CONTROL_ERROR: 3,
  SETTINGS_TIMEOUT: 4,
  FRAME_SIZE_ERROR: 6,
  REFUSED_STREAM: 7,
  CANCEL: 8,
  COMPRESSION_ERROR: 9,
  ENHANCE_YOUR_CALM: 11,
} as const;

export interface Frame {
  readonly type: number;
  readonly flags: number;
  readonly id: number;
  readonly payload: Buffer;
}

export function frame(type: number, flags: number, id: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const b = Buffer.alloc(9 + payload.length);
  b.writeUIntBE(payload.length, 0, 3);
  b[3] = type;
  b[4] = flags;
  b.writeUInt32BE(id, 5);
  payload.copy(b, 9);
  return b;
}

export function settings(values: Record<number, number> = {}): Buffer {
  const entries = Object.entries(values);
  const b = Buffer.alloc(6 * entries.length);
  entries.forEach(([k, v], i) => {
    b.writeUInt16BE(Number(k), i * 6);
    b.writeUInt32BE(v, i * 6 + 2);
  });
  return frame(T.SETTINGS, 0, 0, b);
}

export function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n, 0);
  return b;
}

/** A header block of literals; `indexed` adds each field to the server's dynamic table. */
export function headerBlock(fields: readonly (readonly [string, string])[], indexed = false): Buffer {
  const parts: Buffer[] = [];
  for (const [name, value] of fields) {
    const bytes: number[] = [indexed ? 0x40 : 0];
    writeInt(name.length, 7, 0, bytes);
    parts.push(Buffer.from(bytes), Buffer.from(name, 'latin1'));
    const vl: number[] = [];
    writeInt(value.length, 7, 0, vl);
    parts.push(Buffer.from(vl), Buffer.from(value, 'latin1'));
  }
  return Buffer.concat(parts);
}

export function grpcRequestHeaders(path: string, extra: [string, string][] = []): Buffer {
  return headerBlock([
    [':method', 'POST'],
    [':scheme', 'http'],
    [':path', path],
    [':authority', 'localhost'],
    ['content-type', 'application/grpc'],
    ['te', 'trailers'],
    ...extra,
  ]);
}

/** `u8 compressed | u32 length | bytes`. */
export function grpcMessage(body: Buffer): Buffer {
  const out = Buffer.alloc(5 + body.length);
  out.writeUInt32BE(body.length, 1);
  body.copy(out, 5);
  return out;
}

/** One raw HTTP/2 connection to the server. */
export class RawH2 {
  readonly socket: Socket;
  readonly frames: Frame[] = [];
  readonly hpack = new HpackDecoder();
  closed = false;
  #buf: Buffer = Buffer.alloc(0);
  #waiters = new Set<() => void>();

  private constructor(socket: Socket) {
    this.socket = socket;
    socket.on('data', (chunk: Buffer) => {
      this.#buf = Buffer.concat([this.#buf, chunk]);
      while (this.#buf.length >= 9) {
        const length = this.#buf.readUIntBE(0, 3);
        if (this.#buf.length < 9 + length) break;
        this.frames.push({
          type: this.#buf[3] as number,
          flags: this.#buf[4] as number,
          id: this.#buf.readUInt32BE(5) & 0x7fffffff,
          payload: Buffer.from(this.#buf.subarray(9, 9 + length)),
        });
        this.#buf = this.#buf.subarray(9 + length);
      }
      this.#wake();
    });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      this.closed = true;
      this.#wake();
    });
  }

  #wake(): void {
    for (const w of [...this.#waiters]) w();
  }

  /** Connects; with `preface` (default) sends the preface and `clientSettings`. */
  static open(
    port: number,
    options: { preface?: boolean; settings?: Record<number, number> } = {},
  ): Promise<RawH2> {
    return new Promise((resolve, reject) => {
      const socket = connect({ port, host: '127.0.0.1', noDelay: true }, () => {
        const c = new RawH2(socket);
        if (options.preface !== false) socket.write(Buffer.concat([PREFACE, settings(options.settings)]));
        resolve(c);
      });
      socket.once('error', reject);
    });
  }

  send(...frames: Buffer[]): void {
    this.socket.write(Buffer.concat(frames));
  }

  /** Waits for the first frame (from `from` on) that `match` accepts; undefined if the socket closed first. */
  async next(match: (f: Frame) => boolean, from = 0, timeoutMs = 10_000): Promise<Frame | undefined> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const f = this.frames.slice(from).find(match);
      if (f !== undefined) return f;
      if (this.closed) return undefined;
      if (Date.now() > deadline) throw new Error(`no such frame in ${timeoutMs} ms`);
      const waiters = this.#waiters;
      await new Promise<void>((resolve) => {
        const timer = { handle: undefined as NodeJS.Timeout | undefined };
        const done = (): void => {
          clearTimeout(timer.handle);
          waiters.delete(done);
          resolve();
        };
        timer.handle = setTimeout(done, Math.max(1, deadline - Date.now()));
        waiters.add(done);
      });
    }
  }

  /** The server's GOAWAY error code, waiting for it (undefined if it closed without one). */
  async goaway(timeoutMs = 10_000): Promise<number | undefined> {
    const f = await this.next((x) => x.type === T.GOAWAY, 0, timeoutMs);
    return f?.payload.readUInt32BE(4);
  }

  /** Resolves once the server closed the connection. */
  async whenClosed(timeoutMs = 10_000): Promise<void> {
    await this.next(() => false, 0, timeoutMs);
  }

  /** A PING round trip: proof the server read everything sent before it. */
  async ping(): Promise<void> {
    const data = Buffer.from(String(Math.random()).slice(2, 10).padEnd(8, '0'));
    const from = this.frames.length;
    this.send(frame(T.PING, 0, 0, data));
    const f = await this.next(
      (x) => x.type === T.PING && (x.flags & F.ACK) !== 0 && x.payload.equals(data),
      from,
    );
    if (f === undefined) throw new Error('closed before the PING was answered');
  }

  /** The decoded header blocks of stream `id` so far, and its DATA bytes. */
  stream(id: number): { blocks: Record<string, string>[]; data: Buffer; ended: boolean; reset?: number } {
    const blocks: Record<string, string>[] = [];
    const data: Buffer[] = [];
    let ended = false;
    let reset: number | undefined;
    for (const f of this.frames) {
      if (f.id !== id) continue;
      if (f.type === T.HEADERS) blocks.push(this.#decoded(f));
      if (f.type === T.DATA) data.push(f.payload);
      if (f.type === T.RST_STREAM) reset = f.payload.readUInt32BE(0);
      if ((f.type === T.HEADERS || f.type === T.DATA) && f.flags & F.END_STREAM) ended = true;
    }
    return { blocks, data: Buffer.concat(data), ended, ...(reset === undefined ? {} : { reset }) };
  }

  readonly #decodedBlocks = new WeakMap<Frame, Record<string, string>>();
  #decoded(f: Frame): Record<string, string> {
    // Blocks are decoded once each, in order of arrival (the server uses no dynamic table).
    let d = this.#decodedBlocks.get(f);
    if (d === undefined) {
      d = this.hpack.decode(f.payload) ?? {};
      this.#decodedBlocks.set(f, d);
    }
    return d;
  }

  /** Waits until stream `id` has ended (END_STREAM or RST_STREAM). */
  async ended(id: number, timeoutMs = 10_000): Promise<ReturnType<RawH2['stream']>> {
    await this.next(
      (f) =>
        f.id === id &&
        (f.type === T.RST_STREAM ||
          ((f.type === T.HEADERS || f.type === T.DATA) && (f.flags & F.END_STREAM) !== 0)),
      0,
      timeoutMs,
    );
    return this.stream(id);
  }

  close(): void {
    this.socket.destroy();
  }
}
