/**
 * The chunked transfer coding (RFC 9112 §7.1), decoded strictly: a chunk size of 1–13 hex digits
 * (optionally followed by `;` extensions, which are dropped), the data, CRLF; after the last (zero)
 * chunk, a trailer section of field lines (dropped) ending in an empty line. Bare LF, a missing CRLF
 * after the data, a bad size or an over-long line throw the error made by `fail`. Used for response
 * bodies (response-framer.ts) and, with the raw client side, request bodies.
 */

/** 4 KiB for one chunk-size line with its extensions, or one trailer field. */
export const MAX_CHUNK_LINE_BYTES = 4096;

const HEX = /^[0-9A-Fa-f]{1,13}$/;
const TRAILER = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+:[\t\x20-\x7e\x80-\xff]*$/;

const SIZE = 0;
const DATA = 1;
const DATA_END = 2;
const TRAILERS = 3;

export class ChunkedDecoder {
  readonly #fail: (why: string) => Error;
  #state = SIZE;
  #left = 0;
  #line = '';

  constructor(fail: (why: string) => Error) {
    this.#fail = fail;
  }

  /** Starts a new body. */
  reset(): void {
    this.#state = SIZE;
    this.#left = 0;
    this.#line = '';
  }

  /**
   * Decodes `d` from index `i`, handing each piece of chunk data to `data`; returns the index just
   * past the body's end, or -1 when the body goes on in the next bytes.
   */
  decode(d: Buffer, i: number, data: (chunk: Buffer) => void): number {
    while (i < d.length) {
      if (this.#state === DATA) {
        const take = Math.min(this.#left, d.length - i);
        this.#left -= take;
        const chunk = d.subarray(i, i + take);
        i += take;
        if (this.#left === 0) this.#state = DATA_END;
        data(chunk);
        continue;
      }
      const nl = d.indexOf(10, i);
      const end = nl < 0 ? d.length : nl;
      this.#line += d.toString('latin1', i, end);
      if (this.#line.length > MAX_CHUNK_LINE_BYTES) throw this.#fail('a chunk line is too long');
      if (nl < 0) return -1;
      i = nl + 1;
      if (!this.#line.endsWith('\r')) throw this.#fail('a chunk line ends in a bare LF');
      const line = this.#line.slice(0, -1);
      this.#line = '';
      if (this.#state === DATA_END) {
        if (line !== '') throw this.#fail('chunk data longer than its size');
        this.#state = SIZE;
      } else if (this.#state === SIZE) {
        const semi = line.indexOf(';');
        const size = semi < 0 ? line : line.slice(0, semi).replace(/[ \t]+$/, '');
        if (!HEX.test(size)) throw this.#fail(`an invalid chunk size ${JSON.stringify(size.slice(0, 20))}`);
        this.#left = parseInt(size, 16);
        this.#state = this.#left === 0 ? TRAILERS : DATA;
      } else if (line === '') {
        this.reset();
        return i; // the end of the trailer section (trailers are not passed on)
      } else if (!TRAILER.test(line)) throw this.#fail('an invalid trailer field');
    }
    return -1;
  }
}
