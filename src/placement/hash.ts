/**
 * The hash functions placement is built on. All of them use only 32-bit integer operations and the four
 * basic IEEE-754 double operations, which ECMAScript specifies exactly, so every machine and every
 * JavaScript engine computes the same bits. (`Math.log` and friends are *not* specified to be correctly
 * rounded, which is why {@link lnUnit} is written out here.)
 *
 * - Strings are hashed with MurmurHash3 x86_32 (Austin Appleby, public domain) over their UTF-8 bytes:
 *   a short, well-known function with published test vectors and good avalanche, and its 32-bit
 *   multiplies map onto `Math.imul`. Two passes with different seeds give 64 bits.
 * - A (partition, instance) pair is scored by {@link pairScore}: the two 64-bit hashes are xor-folded
 *   and run through the `lowbias32` integer finaliser (Chris Wellons' hash-prospector), a handful of
 *   operations, so one placement over 100,000 × 1,000 pairs stays well under a second.
 * - Routing keys map to partitions with jump consistent hash (Lamping & Veach, 2014), which moves only
 *   1/(n+1) of the keys when the partition count grows from n to n+1.
 */

const C1 = 0xcc9e2d51;
const C2 = 0x1b873593;

// Streaming state for murmur3 over UTF-8 bytes produced on the fly (no TextEncoder allocation).
let sH = 0;
let sK = 0;
let sN = 0;

function feed(byte: number): void {
  sK |= byte << ((sN & 3) << 3);
  sN++;
  if ((sN & 3) === 0) {
    let k = Math.imul(sK, C1);
    k = (k << 15) | (k >>> 17);
    sH ^= Math.imul(k, C2);
    sH = (sH << 13) | (sH >>> 19);
    sH = (Math.imul(sH, 5) + 0xe6546b64) | 0;
    sK = 0;
  }
}

/** The murmur3 finaliser: a bijective 32-bit mixer. */
export function fmix32(x: number): number {
  let h = x | 0;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/**
 * MurmurHash3 x86_32 of the UTF-8 encoding of `text` (lone surrogates encode as U+FFFD, as
 * `TextEncoder` does), as an unsigned 32-bit integer.
 */
export function murmur3(text: string, seed: number): number {
  sH = seed | 0;
  sK = 0;
  sN = 0;
  const n = text.length;
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x80) {
      feed(c);
    } else if (c < 0x800) {
      feed(0xc0 | (c >>> 6));
      feed(0x80 | (c & 0x3f));
    } else if (c >= 0xd800 && c <= 0xdbff && i + 1 < n && (text.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
      const cp = 0x10000 + ((c - 0xd800) << 10) + (text.charCodeAt(i + 1) - 0xdc00);
      i++;
      feed(0xf0 | (cp >>> 18));
      feed(0x80 | ((cp >>> 12) & 0x3f));
      feed(0x80 | ((cp >>> 6) & 0x3f));
      feed(0x80 | (cp & 0x3f));
    } else {
      const u = c >= 0xd800 && c <= 0xdfff ? 0xfffd : c;
      feed(0xe0 | (u >>> 12));
      feed(0x80 | ((u >>> 6) & 0x3f));
      feed(0x80 | (u & 0x3f));
    }
  }
  let h = sH;
  if ((sN & 3) !== 0) {
    let k = Math.imul(sK, C1);
    k = (k << 15) | (k >>> 17);
    h ^= Math.imul(k, C2);
  }
  return fmix32(h ^ sN);
}

/** Derives the i-th sub-seed from a user seed, so the hashes of different roles are independent. */
export function subSeed(seed: number, i: number): number {
  return fmix32((seed + Math.imul(i, 0x9e3779b9)) | 0);
}

/**
 * Score of one (partition, instance) pair, an unsigned 32-bit integer; the instance with the highest
 * score is the partition's rendezvous choice. Placement inlines this same formula in its hot loops.
 */
export function pairScore(pLo: number, pHi: number, iLo: number, iHi: number): number {
  let h = pLo ^ iLo;
  h = Math.imul(h ^ (h >>> 16), 0x7feb352d);
  h ^= pHi ^ iHi;
  h = Math.imul(h ^ (h >>> 15), 0x846ca68b);
  return (h ^ (h >>> 16)) >>> 0;
}

const LN2 = 0.6931471805599453;
const SQRT2 = 1.4142135623730951;
// 2^-e for e = 0..31, built by exact halving (`2 ** e` is Math.pow, which is not specified exactly).
const INV_POW2 = new Float64Array(32);
for (let e = 0, v = 1; e < 32; e++, v *= 0.5) INV_POW2[e] = v;

/**
 * `ln((h + 0.5) / 2^32)` for an unsigned 32-bit `h`: the natural log of a uniform draw in (0, 1).
 * Computed with +, −, ×, ÷ only (range reduction by powers of two, then the atanh series to 10 terms,
 * |error| < 1e-15), so the value is bit-identical everywhere.
 */
export function lnUnit(h: number): number {
  const x = h + 0.5;
  let e = h === 0 ? -1 : 31 - Math.clz32(h);
  let m = e >= 0 ? x * INV_POW2[e]! : x * 2;
  if (m > SQRT2) {
    m /= 2;
    e += 1;
  }
  const s = (m - 1) / (m + 1);
  const z = s * s;
  const series =
    1 +
    z *
      (1 / 3 +
        z *
          (1 / 5 +
            z * (1 / 7 + z * (1 / 9 + z * (1 / 11 + z * (1 / 13 + z * (1 / 15 + z * (1 / 17 + z / 19))))))));
  return (e - 32) * LN2 + 2 * s * series;
}

// 2862933555777941757, the 64-bit LCG multiplier of jump consistent hash, as two 32-bit halves.
const JUMP_HI = 0x27bb2ee6;
const JUMP_LO = 0x87b0b0fd;

/**
 * Jump consistent hash of the 64-bit key (hi, lo) into `buckets` buckets, bit-identical to the
 * reference C++ (64-bit arithmetic emulated with 16-bit limbs).
 */
export function jumpHash(hi: number, lo: number, buckets: number): number {
  let kHi = hi >>> 0;
  let kLo = lo >>> 0;
  let b = -1;
  let j = 0;
  while (j < buckets) {
    b = j;
    // key = key * JUMP + 1 (mod 2^64)
    const a0 = kLo & 0xffff;
    const a1 = kLo >>> 16;
    const b0 = JUMP_LO & 0xffff;
    const b1 = JUMP_LO >>> 16;
    const p00 = a0 * b0;
    const p01 = a0 * b1;
    const p10 = a1 * b0;
    const mid = (p00 >>> 16) + (p01 & 0xffff) + (p10 & 0xffff);
    const lo32 = (((mid & 0xffff) << 16) | (p00 & 0xffff)) >>> 0;
    const hi32 = a1 * b1 + (p01 >>> 16) + (p10 >>> 16) + (mid >>> 16);
    let nHi = (hi32 + Math.imul(kHi, JUMP_LO) + Math.imul(kLo, JUMP_HI)) >>> 0;
    let nLo = lo32 + 1;
    if (nLo === 0x100000000) {
      nLo = 0;
      nHi = (nHi + 1) >>> 0;
    }
    kHi = nHi;
    kLo = nLo;
    j = Math.floor((b + 1) * (2147483648 / ((kHi >>> 1) + 1)));
  }
  return b;
}
