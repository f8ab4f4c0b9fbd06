/**
 * HPACK (RFC 7541) decoding for the gRPC transport's HTTP/2 (h2.ts): Huffman-coded strings,
 * prefixed integers, string literals, and the decoder of a client's header blocks with its dynamic
 * table. Answers are encoded without a dynamic table (see h2.ts), so there is no encoder here.
 */

const COMPRESSION_ERROR = 9;
const MAX_HPACK_INT = 2 ** 32 - 1;
/** RFC 9113 §6.5.2: a header field's size is its name and value lengths plus 32. */
const FIELD_OVERHEAD = 32;

/** A connection error with its HTTP/2 error code. */
export class H2Error extends Error {
  readonly code: number;
  constructor(code: number, message: string) {
    super(message);
    this.code = code;
  }
}

// HPACK's Huffman code (RFC 7541, Appendix B): code and length in bits of symbols 0–255 and EOS.
export const CODES: readonly number[] = [
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
export const LENGTHS: readonly number[] = [
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

/**
 * The Huffman decoder as a state machine over 4-bit steps (as nghttp2 decodes): a state is an inner
 * node of the code tree (256 of them, the root is 0), and `STEP[state * 16 + nibble]` holds the state
 * after those 4 bits, the symbol completed on the way (at most one: no code is shorter than 5 bits),
 * and whether the bits ran into EOS. A byte costs two table reads (a bit-by-bit decoder took about
 * 40 ms for a 60 KB string — too much work for what a peer may send in one header block).
 */
const NO_SYMBOL = 256;
const FAIL = 1 << 20;
const { STEP, PADDING } = (() => {
  // The tree: inner nodes [zero child, one child]; a child is an inner node id, or -1 - symbol.
  const kids: [number, number][] = [[0, 0]];
  const depth = [0];
  const ones = [true];
  for (let sym = 0; sym <= 256; sym++) {
    const code = CODES[sym] as number;
    const len = LENGTHS[sym] as number;
    let node = 0;
    for (let i = len - 1; i >= 0; i--) {
      const bit = Math.floor(code / 2 ** i) % 2;
      const k = kids[node] as [number, number];
      if (i === 0) {
        k[bit] = -1 - sym;
        break;
      }
      if (k[bit] === 0) {
        kids.push([0, 0]);
        depth.push((depth[node] as number) + 1);
        ones.push((ones[node] as boolean) && bit === 1);
        k[bit] = kids.length - 1;
      }
      node = k[bit] as number;
    }
  }
  const step = new Int32Array(kids.length * 16);
  for (let state = 0; state < kids.length; state++) {
    for (let nibble = 0; nibble < 16; nibble++) {
      let node = state;
      let emitted = NO_SYMBOL;
      let fail = 0;
      for (let b = 3; b >= 0; b--) {
        const next = (kids[node] as [number, number])[(nibble >> b) & 1] as number;
        if (next >= 0) {
          node = next;
          continue;
        }
        const sym = -1 - next;
        if (sym === 256) fail = FAIL;
        emitted = sym;
        node = 0;
      }
      step[state * 16 + nibble] = fail | (emitted << 9) | node;
    }
  }
  // Where a string may end: at the root, or inside a code on a path of fewer than 8 one bits.
  const padding = kids.map((_, i) => i === 0 || ((ones[i] as boolean) && (depth[i] as number) < 8));
  return { STEP: step, PADDING: padding };
})();

/** Decodes a Huffman-coded HPACK string; `undefined` when it is not valid. */
export function huffmanDecode(bytes: Uint8Array): Buffer | undefined {
  // No symbol is shorter than 5 bits: at most 8 symbols per 5 bytes.
  const out = Buffer.allocUnsafe(Math.ceil((bytes.length * 8) / 5));
  let n = 0;
  let state = 0;
  for (let i = 0; i < bytes.length; i++) {
    const byte = bytes[i] as number;
    let e = STEP[state * 16 + (byte >> 4)] as number;
    if (e & FAIL) return undefined;
    let sym = (e >> 9) & 0x1ff;
    if (sym !== NO_SYMBOL) out[n++] = sym;
    e = STEP[(e & 0x1ff) * 16 + (byte & 15)] as number;
    if (e & FAIL) return undefined;
    sym = (e >> 9) & 0x1ff;
    if (sym !== NO_SYMBOL) out[n++] = sym;
    state = e & 0x1ff;
  }
  if (!PADDING[state]) return undefined;
  return out.subarray(0, n);
}

/** Appends an HPACK integer with an `n`-bit prefix, its first byte or-ed with `first` (RFC 7541 §5.1). */
export function writeInt(v: number, n: number, first: number, out: number[]): void {
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

/** An HPACK integer with an `n`-bit prefix at `pos`: its value and the position after it. */
export function readInt(buf: Buffer, pos: number, n: number): [number, number] {
  const max = 2 ** n - 1;
  const first = buf[pos];
  if (first === undefined) throw new H2Error(COMPRESSION_ERROR, 'truncated HPACK integer');
  let v = first & max;
  pos++;
  if (v < max) return [v, pos];
  let m = 1;
  for (;;) {
    const b = buf[pos++];
    if (b === undefined) throw new H2Error(COMPRESSION_ERROR, 'truncated HPACK integer');
    v += (b & 0x7f) * m;
    m *= 128;
    // Nothing in a header block needs more than 32 bits (RFC 7541 §5.1: decoders must refuse
    // integers too large for them), and the loop must not run on over a run of continuation bytes.
    if (v > MAX_HPACK_INT) throw new H2Error(COMPRESSION_ERROR, 'HPACK integer too large');
    if (b < 0x80) return [v, pos];
    if (m > 2 ** 35) throw new H2Error(COMPRESSION_ERROR, 'HPACK integer too long');
  }
}

/**
 * An HPACK string at `pos`: its decoded bytes (`undefined` when its Huffman code is invalid, or
 * when `skip` is set: the caller only needs the position after it) and the position after it.
 */
export function readString(buf: Buffer, pos: number, skip = false): [Buffer | undefined, number] {
  const huffman = ((buf[pos] ?? 0) & 0x80) !== 0;
  const [len, start] = readInt(buf, pos, 7);
  const end = start + len;
  if (end > buf.length) throw new H2Error(COMPRESSION_ERROR, 'truncated HPACK string');
  if (skip) return [undefined, end];
  const raw = buf.subarray(start, end);
  return [huffman ? huffmanDecode(raw) : raw, end];
}

/** The decoder's table size: HTTP/2's default (the transport does not advertise another). */
export const HEADER_TABLE_SIZE = 4096;

// RFC 7541 Appendix A.
const STATIC: readonly (readonly [string, string])[] = [
  ['', ''],
  [':authority', ''],
  [':method', 'GET'],
  [':method', 'POST'],
  [':path', '/'],
  [':path', '/index.html'],
  [':scheme', 'http'],
  [':scheme', 'https'],
  [':status', '200'],
  [':status', '204'],
  [':status', '206'],
  [':status', '304'],
  [':status', '400'],
  [':status', '404'],
  [':status', '500'],
  ...[
    'accept-charset',
    'accept-encoding',
    'accept-language',
    'accept-ranges',
    'accept',
    'access-control-allow-origin',
    'age',
    'allow',
    'authorization',
    'cache-control',
    'content-disposition',
    'content-encoding',
    'content-language',
    'content-length',
    'content-location',
    'content-range',
    'content-type',
    'cookie',
    'date',
    'etag',
    'expect',
    'expires',
    'from',
    'host',
    'if-match',
    'if-modified-since',
    'if-none-match',
    'if-range',
    'if-unmodified-since',
    'last-modified',
    'link',
    'location',
    'max-forwards',
    'proxy-authenticate',
    'proxy-authorization',
    'range',
    'referer',
    'refresh',
    'retry-after',
    'server',
    'set-cookie',
    'strict-transport-security',
    'transfer-encoding',
    'user-agent',
    'vary',
    'via',
    'www-authenticate',
  ].map((n): [string, string] => [n, n === 'accept-encoding' ? 'gzip, deflate' : '']),
];

/** The decoder side of HPACK: the client's dynamic table. */
export class HpackDecoder {
  #table: [string, string][] = [];
  #size = 0;
  #max = HEADER_TABLE_SIZE;

  /**
   * A header block as an object (lower-case names; a repeated name's values joined with `, `, as
   * Node does). With `maxListBytes`: `undefined` when the list's size (RFC 9113 §6.5.2) is above it
   * — the block is still walked to its end and the dynamic table updated, so the connection stays
   * usable, but nothing more is built than that limit (an indexed entry of 4 KiB repeated in a small
   * block would otherwise decode into megabytes).
   */
  decode(block: Buffer, maxListBytes = Infinity): Record<string, string> | undefined {
    const out: Record<string, string> = {};
    let size = 0;
    let over = false;
    let p = 0;
    let fields = 0;
    while (p < block.length) {
      const b = block[p] as number;
      let name: string;
      let value: string;
      if (b & 0x80) {
        let i: number;
        [i, p] = readInt(block, p, 7);
        [name, value] = this.#entry(i);
      } else if ((b & 0xe0) === 0x20) {
        // RFC 7541 §4.2: a size update comes first in a block.
        if (fields > 0) throw new H2Error(COMPRESSION_ERROR, 'HPACK table size update after a field');
        let max: number;
        [max, p] = readInt(block, p, 5);
        if (max > HEADER_TABLE_SIZE) throw new H2Error(COMPRESSION_ERROR, 'HPACK table size above the limit');
        this.#max = max;
        this.#evict();
        continue;
      } else {
        const indexing = (b & 0xc0) === 0x40;
        let i: number;
        [i, p] = readInt(block, p, indexing ? 6 : 4);
        // A field over the limit is only walked past, unless the table needs it.
        const skip = over && !indexing;
        if (i > 0) name = this.#entry(i)[0];
        else [name, p] = this.#string(block, p, skip);
        [value, p] = this.#string(block, p, skip);
        if (indexing) this.#add(name, value);
      }
      fields++;
      if (over) continue;
      size += name.length + value.length + FIELD_OVERHEAD;
      if (size > maxListBytes) {
        over = true;
        continue;
      }
      const prev = out[name];
      out[name] = prev === undefined ? value : `${prev}, ${value}`;
    }
    return over ? undefined : out;
  }

  #string(block: Buffer, p: number, skip = false): [string, number] {
    const [bytes, next] = readString(block, p, skip);
    if (skip) return ['', next];
    if (bytes === undefined) throw new H2Error(COMPRESSION_ERROR, 'bad Huffman string');
    return [bytes.toString('latin1'), next];
  }

  #entry(i: number): readonly [string, string] {
    const e = i < STATIC.length ? (i === 0 ? undefined : STATIC[i]) : this.#table[i - STATIC.length];
    if (e === undefined) throw new H2Error(COMPRESSION_ERROR, `HPACK index ${i} out of range`);
    return e;
  }

  #add(name: string, value: string): void {
    this.#table.unshift([name, value]);
    this.#size += 32 + name.length + value.length;
    this.#evict();
  }

  #evict(): void {
    while (this.#size > this.#max) {
      const e = this.#table.pop();
      if (e === undefined) break;
      this.#size -= 32 + e[0].length + e[1].length;
    }
  }
}
