/**
 * Makes `etcdctl --endpoints http://HOST:PORT` work: an HTTP/2 filter that rewrites a `:authority`
 * Node's HTTP/2 server would refuse.
 *
 * etcdctl 3.4 (grpc-go) dials maintenance calls with the whole endpoint URL as the HTTP/2
 * `:authority` (`http://127.0.0.1:2379`). nghttp2, under Node's HTTP/2 server, refuses an authority
 * with `/` and resets the stream with PROTOCOL_ERROR before any JavaScript sees it, and Node offers no
 * option to relax that check. So connections from grpc-go clients — recognised by their first
 * SETTINGS frame, which grpc-go sends empty and Node's and gRPC C-core's clients do not — pass
 * through this filter: it reads the client's HEADERS frames, decodes their HPACK blocks far enough
 * to find `:authority` literals, and replaces every character nghttp2 refuses with `_`
 * (`http:__127.0.0.1:2379`). The value keeps its length, so both ends' HPACK dynamic tables keep
 * the same sizes and later indexed references stay in step; it is rewritten as a plain (not
 * Huffman-coded) string and the frame length adjusted. Nothing uses the authority on this server.
 * Every other frame, and every byte the server sends, passes unchanged. Other clients' connections
 * are handed to gRPC as they are (a filtered connection runs through a JavaScript stream instead of
 * the native socket, which costs CPU per request).
 *
 * Not rewritten (passed unchanged): header blocks split over CONTINUATION frames.
 */
import { Duplex } from 'node:stream';
import type { Socket } from 'node:net';

/** The client connection preface every HTTP/2 client sends first. */
const PREFACE_BYTES = 24;
const FRAME_HEADER = 9;
const TYPE_HEADERS = 1;
const FLAG_END_HEADERS = 0x4;
const FLAG_PADDED = 0x8;
const FLAG_PRIORITY = 0x20;
/** HPACK static table index of `:authority`. */
const AUTHORITY_INDEX = 1;

/**
 * True when the connection's first bytes (the preface, then the first SETTINGS frame) come from a
 * grpc-go client: its first SETTINGS frame is empty. `undefined` while fewer bytes have arrived.
 */
export function isGoClient(head: Buffer): boolean | undefined {
  if (head.length < PREFACE_BYTES + FRAME_HEADER) return undefined;
  const f = PREFACE_BYTES;
  const length = head.readUIntBE(f, 3);
  return head[f + 3] === 4 && length === 0;
}

/** Characters nghttp2 accepts in an authority (RFC 3986 authority characters). */
const ALLOWED = /^[A-Za-z0-9\-._~!$&'()*+,;=:@[\]%]*$/;

/** The authority with each character nghttp2 refuses replaced by `_` (same length). */
export function sanitizeAuthority(value: string): string {
  return ALLOWED.test(value) ? value : value.replace(/[^A-Za-z0-9\-._~!$&'()*+,;=:@[\]%]/g, '_');
}

// HPACK's Huffman code (RFC 7541, Appendix B): code and length in bits of symbols 0–255 and EOS.
const CODES = [
  8184, 8388568, 268435426, 268435427, 268435428, 268435429, 268435430, 268435431, 268435432, 16777194,
  1073741820, 268435433, 268435434, 1073741821, 268435435, 268435436, 268435437, 268435438, 268435439,
  268435440, 268435441, 268435442, 1073741822, 268435443, 268435444, 268435445, 268435446, 268435447,
  268435448, 268435449, 268435450, 268435451, 20, 1016, 1017, 4090, 8185, 21, 248, 2042, 1018, 1019, 249,
  2043, 250, 22, 23, 24, 0, 1, 2, 25, 26, 27, 28, 29, 30, 31, 92, 251, 32764, 32, 4091, 1020, 8186, 33, 93,
  94, 95, 96, 97, 98, 99, 100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 111, 112, 113, 114, 252, 115,
  253, 8187, 524272, 8188, 16380, 34, 32765, 3, 35, 4, 36, 5, 37, 38, 39, 6, 116, 117, 40, 41, 42, 7, 43, 118,
  44, 8, 9, 45, 119, 120, 121, 122, 123, 32766, 2044, 16381, 8189, 268435452, 1048550, 4194258, 1048551,
  1048552, 4194259, 4194260, 4194261, 8388569, 4194262, 8388570, 8388571, 8388572, 8388573, 8388574, 16777195,
  8388575, 16777196, 16777197, 4194263, 8388576, 16777198, 8388577, 8388578, 8388579, 8388580, 2097116,
  4194264, 8388581, 4194265, 8388582, 8388583, 16777199, 4194266, 2097117, 1048553, 4194267, 4194268, 8388584,
  8388585, 2097118, 8388586, 4194269, 4194270, 16777200, 2097119, 4194271, 8388587, 8388588, 2097120, 2097121,
  4194272, 2097122, 8388589, 4194273, 8388590, 8388591, 1048554, 4194274, 4194275, 4194276, 8388592, 4194277,
  4194278, 8388593, 67108832, 67108833, 1048555, 524273, 4194279, 8388594, 4194280, 33554412, 67108834,
  67108835, 67108836, 134217694, 134217695, 67108837, 16777201, 33554413, 524274, 2097123, 67108838,
  134217696, 134217697, 67108839, 134217698, 16777202, 2097124, 2097125, 67108840, 67108841, 268435453,
  134217699, 134217700, 134217701, 1048556, 16777203, 1048557, 2097126, 4194281, 2097127, 2097128, 8388595,
  4194282, 4194283, 33554414, 33554415, 16777204, 16777205, 67108842, 8388596, 67108843, 134217702, 67108844,
  67108845, 134217703, 134217704, 134217705, 134217706, 134217707, 268435454, 134217708, 134217709, 134217710,
  134217711, 134217712, 67108846, 1073741823,
];
const LENGTHS = [
  13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28,
  28, 28, 28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7,
  8, 15, 6, 12, 10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19,
  13, 14, 6, 15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13,
  28, 20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21,
  22, 23, 22, 23, 23, 24, 22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23,
  22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, 26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25,
  19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, 20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25,
  25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, 30,
];

/** Symbol by code, per code length. */
const DECODE: Map<number, number>[] = (() => {
  const out: Map<number, number>[] = [];
  for (let s = 0; s < 256; s++) {
    const len = LENGTHS[s] as number;
    (out[len] ??= new Map()).set(CODES[s] as number, s);
  }
  return out;
})();

/** Decodes a Huffman-coded HPACK string; `undefined` when it is not valid. */
export function huffmanDecode(bytes: Uint8Array): Buffer | undefined {
  const out: number[] = [];
  let code = 0;
  let len = 0;
  for (const byte of bytes) {
    for (let bit = 7; bit >= 0; bit--) {
      code = code * 2 + ((byte >> bit) & 1);
      len++;
      const sym = DECODE[len]?.get(code);
      if (sym !== undefined) {
        out.push(sym);
        code = 0;
        len = 0;
      } else if (len > 30) return undefined;
    }
  }
  // What is left must be padding: fewer than 8 bits, all ones.
  if (len >= 8 || code !== 2 ** len - 1) return undefined;
  return Buffer.from(out);
}

/** An HPACK integer with an `n`-bit prefix at `pos`: its value and the position after it. */
function readInt(buf: Buffer, pos: number, n: number): [number, number] {
  const max = 2 ** n - 1;
  let v = (buf[pos] as number) & max;
  pos++;
  if (v < max) return [v, pos];
  let m = 1;
  for (;;) {
    const b = buf[pos++];
    if (b === undefined) throw new RangeError('truncated HPACK integer');
    v += (b & 0x7f) * m;
    m *= 128;
    if (b < 0x80) return [v, pos];
  }
}

function writeInt(v: number, n: number, first: number): number[] {
  const max = 2 ** n - 1;
  if (v < max) return [first | v];
  const out = [first | max];
  v -= max;
  while (v >= 128) {
    out.push((v % 128) | 0x80);
    v = Math.floor(v / 128);
  }
  out.push(v);
  return out;
}

/** An HPACK string at `pos`: its decoded bytes and the position after it. */
function readString(buf: Buffer, pos: number): [Buffer | undefined, number] {
  const huffman = ((buf[pos] as number) & 0x80) !== 0;
  const [len, start] = readInt(buf, pos, 7);
  const end = start + len;
  if (end > buf.length) throw new RangeError('truncated HPACK string');
  const raw = buf.subarray(start, end);
  return [huffman ? huffmanDecode(raw) : raw, end];
}

/**
 * Rewrites the `:authority` literals of one HPACK header block (see the file comment); returns the
 * block unchanged when there is nothing to rewrite or it cannot be read.
 */
export function rewriteAuthority(block: Buffer): Buffer {
  const parts: Buffer[] = [];
  let copied = 0;
  try {
    let pos = 0;
    while (pos < block.length) {
      const b = block[pos] as number;
      let nameIndex: number;
      if (b & 0x80) {
        pos = readInt(block, pos, 7)[1]; // indexed field
        continue;
      }
      if ((b & 0xe0) === 0x20) {
        pos = readInt(block, pos, 5)[1]; // dynamic table size update
        continue;
      }
      if ((b & 0xc0) === 0x40) [nameIndex, pos] = readInt(block, pos, 6);
      else [nameIndex, pos] = readInt(block, pos, 4);
      let authority = nameIndex === AUTHORITY_INDEX;
      if (nameIndex === 0) {
        let name: Buffer | undefined;
        [name, pos] = readString(block, pos);
        authority = name?.toString('latin1') === ':authority';
      }
      const valueAt = pos;
      let value: Buffer | undefined;
      [value, pos] = readString(block, pos);
      if (!authority || value === undefined) continue;
      const text = value.toString('latin1');
      const clean = sanitizeAuthority(text);
      if (clean === text) continue;
      parts.push(block.subarray(copied, valueAt));
      parts.push(Buffer.from(writeInt(clean.length, 7, 0)), Buffer.from(clean, 'latin1'));
      copied = pos;
    }
  } catch {
    return block;
  }
  if (parts.length === 0) return block;
  parts.push(block.subarray(copied));
  return Buffer.concat(parts);
}

/** Rewrites one complete HEADERS frame (header included); other frames are never passed here. */
function rewriteHeadersFrame(frame: Buffer): Buffer {
  const flags = frame[4] as number;
  if ((flags & FLAG_END_HEADERS) === 0) return frame;
  let start = FRAME_HEADER;
  let end = frame.length;
  if (flags & FLAG_PADDED) {
    end -= frame[start] as number;
    start += 1;
  }
  if (flags & FLAG_PRIORITY) start += 5;
  if (start > end) return frame;
  const block = frame.subarray(start, end);
  const rewritten = rewriteAuthority(block);
  if (rewritten === block) return frame;
  const out = Buffer.concat([frame.subarray(0, start), rewritten, frame.subarray(end)]);
  out.writeUIntBE(out.length - FRAME_HEADER, 0, 3);
  return out;
}

/**
 * The connection as a stream whose incoming bytes have their `:authority` literals rewritten; hand
 * it to the HTTP/2 server instead of the socket. `head` holds bytes already read from the socket.
 */
export function authorityFilter(socket: Socket, head: Buffer): Duplex {
  let buffered = head;
  let preface = PREFACE_BYTES;
  /** Bytes of the current non-HEADERS frame still to pass through as they come. */
  let passing = 0;
  const filter = new Duplex({
    read() {
      socket.resume();
    },
    write(chunk: Buffer, _encoding, callback) {
      socket.write(chunk, callback);
    },
    final(callback) {
      socket.end();
      callback();
    },
    destroy(err, callback) {
      socket.destroy(err ?? undefined);
      callback(err);
    },
  });
  const take = (chunk: Buffer): void => {
    buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
    const out: Buffer[] = [];
    for (;;) {
      if (preface > 0 || passing > 0) {
        const n = Math.min(buffered.length, preface > 0 ? preface : passing);
        if (n === 0) break;
        out.push(buffered.subarray(0, n));
        buffered = buffered.subarray(n);
        if (preface > 0) preface -= n;
        else passing -= n;
        continue;
      }
      if (buffered.length < FRAME_HEADER) break;
      const length = buffered.readUIntBE(0, 3);
      if (buffered[3] !== TYPE_HEADERS) {
        passing = FRAME_HEADER + length;
        continue;
      }
      if (buffered.length < FRAME_HEADER + length) break;
      out.push(rewriteHeadersFrame(buffered.subarray(0, FRAME_HEADER + length)));
      buffered = buffered.subarray(FRAME_HEADER + length);
    }
    for (const b of out) if (!filter.push(b)) socket.pause();
  };
  socket.on('data', take);
  socket.on('end', () => filter.push(null));
  socket.on('error', (err) => filter.destroy(err));
  socket.on('close', () => filter.destroy());
  const initial = buffered;
  buffered = Buffer.alloc(0);
  take(initial);
  return filter;
}
