/**
 * Protocol Buffers wire-format primitives shared by muster's codecs: serve's server direction
 * (`src/server/grpc/wire.ts` by hand, `proto-codec.ts` by table: decode requests, encode responses) and the etcd client's
 * (`src/store/etcd/rpc-codec.ts`: encode requests, decode responses). Each codec writes and reads
 * the wire format directly, without protobufjs's reflection; both are checked against protobufjs on
 * random messages (test/server/serve-wire.test.ts, test/store/etcd-rpc-codec.test.ts).
 */

/** A gRPC message's prefix: the compressed flag and the length (big-endian u32). */
export const GRPC_PREFIX = 5;

/** Bytes of a message being written: grows by doubling; reuse one per module (one event loop). */
export class ProtoWriter {
  buf = Buffer.allocUnsafe(4096);
  pos = 0;

  room(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const next = Buffer.allocUnsafe(size);
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }

  /** A varint of a non-negative safe integer. */
  varint(n: number): void {
    this.room(10);
    const b = this.buf;
    while (n >= 0x80) {
      b[this.pos++] = (n % 0x80) | 0x80;
      n = Math.floor(n / 0x80);
    }
    b[this.pos++] = n;
  }

  /** A varint of an int64/uint64 given as a number or a decimal string (negative: two's complement). */
  varint64(v: number | string): void {
    const n = typeof v === 'number' ? v : Number(v);
    if (Number.isSafeInteger(n) && n >= 0) {
      this.varint(n);
      return;
    }
    let big = BigInt.asUintN(64, BigInt(v));
    this.room(10);
    while (big >= 0x80n) {
      this.buf[this.pos++] = Number(big & 0x7fn) | 0x80;
      big >>= 7n;
    }
    this.buf[this.pos++] = Number(big);
  }

  /** A varint field, omitted when zero (proto3). */
  int(field: number, v: number | string): void {
    if (v === 0 || v === '0' || v === '' || v === undefined || v === null) return;
    this.varint(field << 3);
    this.varint64(v);
  }

  bool(field: number, v: boolean): void {
    if (!v) return;
    this.varint(field << 3);
    this.room(1);
    this.buf[this.pos++] = 1;
  }

  bytes(field: number, v: Uint8Array | null | undefined): void {
    if (v == null || v.length === 0) return;
    this.varint((field << 3) | 2);
    this.varint(v.length);
    this.room(v.length);
    this.buf.set(v, this.pos);
    this.pos += v.length;
  }

  string(field: number, v: string | null | undefined): void {
    if (v == null || v === '') return;
    const len = Buffer.byteLength(v);
    this.varint((field << 3) | 2);
    this.varint(len);
    this.room(len);
    this.pos += this.buf.write(v, this.pos, 'utf8');
  }

  /** Copies an already encoded embedded message (its body) as field `field`. */
  raw(field: number, body: Uint8Array): void {
    this.varint((field << 3) | 2);
    this.varint(body.length);
    this.room(body.length);
    this.buf.set(body, this.pos);
    this.pos += body.length;
  }

  /** Starts an embedded message: its tag and one byte reserved for its length. */
  begin(field: number): number {
    this.varint((field << 3) | 2);
    this.room(1);
    return this.pos++;
  }

  /** Ends the message begun at `at`: writes its length, moving the body if it needs more bytes. */
  end(at: number): void {
    const len = this.pos - at - 1;
    if (len < 0x80) {
      this.buf[at] = len;
      return;
    }
    let extra = 0;
    for (let n = len >>> 7; n > 0; n >>>= 7) extra++;
    this.room(extra);
    this.buf.copyWithin(at + 1 + extra, at + 1, this.pos);
    this.pos += extra;
    let p = at;
    let n = len;
    while (n >= 0x80) {
      this.buf[p++] = (n & 0x7f) | 0x80;
      n >>>= 7;
    }
    this.buf[p] = n;
  }

  /** The message as a Buffer of its own; the scratch space is reset for the next one. */
  take(): Buffer {
    const out = Buffer.allocUnsafe(this.pos);
    this.buf.copy(out, 0, 0, this.pos);
    this.pos = 0;
    return out;
  }

  /** The message as a gRPC message (`0`, u32 length, bytes) in a Buffer of its own; resets. */
  takeFramed(): Buffer {
    const out = Buffer.allocUnsafe(GRPC_PREFIX + this.pos);
    out[0] = 0;
    out.writeUInt32BE(this.pos, 1);
    this.buf.copy(out, GRPC_PREFIX, 0, this.pos);
    this.pos = 0;
    return out;
  }
}

/** A protobuf reader over one message. */
export class ProtoReader {
  readonly buf: Buffer;
  pos: number;
  readonly end: number;

  constructor(buf: Buffer, pos: number, end: number) {
    this.buf = buf;
    this.pos = pos;
    this.end = end;
  }

  byte(): number {
    if (this.pos >= this.end) throw new RangeError('index out of range: truncated message');
    return this.buf[this.pos++] as number;
  }

  /** A varint as a number: exact up to 2^53 (tags, lengths, bools); larger ones are re-read by {@link int64}. */
  uint(): number {
    let b = this.byte();
    if (b < 0x80) return b;
    let n = b & 0x7f;
    let mul = 0x80;
    for (let i = 1; i < 10; i++) {
      b = this.byte();
      n += (b & 0x7f) * mul;
      if (b < 0x80) return n;
      mul *= 0x80;
    }
    throw new RangeError('invalid varint encoding');
  }

  /** An int32 enum: the low 32 bits of the varint, signed (negative values come as 10 bytes). */
  enum(): number {
    let v = 0;
    let shift = 0;
    for (;;) {
      const b = this.byte();
      if (shift < 32) v |= (b & 0x7f) << shift;
      shift += 7;
      if (b < 0x80) return v | 0;
      if (shift >= 70) throw new RangeError('invalid varint encoding');
    }
  }

  /** An int64 as the loader gives it: a signed decimal string. */
  int64(): string {
    const start = this.pos;
    const n = this.uint();
    if (n <= Number.MAX_SAFE_INTEGER && this.pos - start < 8) return String(n);
    let big = 0n;
    for (let i = this.pos - 1; i >= start; i--) big = (big << 7n) | BigInt((this.buf[i] as number) & 0x7f);
    return BigInt.asIntN(64, big).toString();
  }

  bool(): boolean {
    return this.uint() !== 0;
  }

  /** Length-delimited bytes, sharing the request's memory (as protobufjs's Buffer reader does). */
  bytes(): Buffer {
    const len = this.uint();
    const start = this.pos;
    if (start + len > this.end) throw new RangeError('index out of range: truncated message');
    this.pos = start + len;
    return this.buf.subarray(start, start + len);
  }

  /** A length-delimited UTF-8 string. */
  string(): string {
    const len = this.uint();
    const start = this.pos;
    if (start + len > this.end) throw new RangeError('index out of range: truncated message');
    this.pos = start + len;
    return this.buf.toString('utf8', start, start + len);
  }

  /** A reader over an embedded message. */
  sub(): ProtoReader {
    const len = this.uint();
    const start = this.pos;
    if (start + len > this.end) throw new RangeError('index out of range: truncated message');
    this.pos = start + len;
    return new ProtoReader(this.buf, start, start + len);
  }

  skip(wire: number): void {
    switch (wire) {
      case 0:
        this.uint();
        return;
      case 1:
        this.pos += 8;
        break;
      case 2: {
        const len = this.uint();
        this.pos += len;
        break;
      }
      case 5:
        this.pos += 4;
        break;
      default:
        throw new Error(`invalid wire type ${wire} at offset ${this.pos}`);
    }
    if (this.pos > this.end) throw new RangeError('index out of range: truncated message');
  }
}

/** The gRPC message (prefix `0`, u32 length, then `body`) in a Buffer of its own. */
export function frameMessage(body: Uint8Array): Buffer {
  const message = Buffer.allocUnsafe(GRPC_PREFIX + body.length);
  message[0] = 0;
  message.writeUInt32BE(body.length, 1);
  message.set(body, GRPC_PREFIX);
  return message;
}
