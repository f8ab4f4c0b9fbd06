import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { fmix32, jumpHash, lnUnit, murmur3 } from '../../src/placement/hash.js';
import { isMusterError, partitionForKey } from '../../src/index.js';

/** MurmurHash3 x86_32 over bytes, written straight from the reference, as an oracle. */
function murmurBytes(bytes: Uint8Array, seed: number): number {
  let h = seed | 0;
  const blocks = bytes.length & ~3;
  const mixK = (k: number): number => {
    k = Math.imul(k, 0xcc9e2d51);
    k = (k << 15) | (k >>> 17);
    return Math.imul(k, 0x1b873593);
  };
  for (let i = 0; i < blocks; i += 4) {
    h ^= mixK(bytes[i]! | (bytes[i + 1]! << 8) | (bytes[i + 2]! << 16) | (bytes[i + 3]! << 24));
    h = (h << 13) | (h >>> 19);
    h = (Math.imul(h, 5) + 0xe6546b64) | 0;
  }
  let k = 0;
  for (let i = bytes.length - 1; i >= blocks; i--) k = (k << 8) | bytes[i]!;
  if (bytes.length & 3) h ^= mixK(k);
  return fmix32(h ^ bytes.length);
}

/** Jump consistent hash with BigInt, straight from Lamping & Veach's C++. */
function jumpReference(key: bigint, buckets: number): number {
  let b = -1n;
  let j = 0n;
  const mask = (1n << 64n) - 1n;
  while (j < BigInt(buckets)) {
    b = j;
    key = (key * 2862933555777941757n + 1n) & mask;
    j = BigInt(Math.floor(Number(b + 1n) * (Number(1n << 31n) / Number((key >> 33n) + 1n))));
  }
  return Number(b);
}

void describe('murmur3', () => {
  void test('matches the published MurmurHash3 x86_32 test vectors', () => {
    const vectors: [string, number, number][] = [
      ['', 0, 0],
      ['', 1, 0x514e28b7],
      ['', 0xffffffff, 0x81f16f39],
      ['\0\0\0\0', 0, 0x2362f9de],
      ['a', 0x9747b28c, 0x7fa09ea6],
      ['ab', 0x9747b28c, 0x74875592],
      ['abc', 0x9747b28c, 0xc84a62dd],
      ['abcd', 0x9747b28c, 0xf0478627],
      ['aaaa', 0x9747b28c, 0x5a97808a],
      ['Hello, world!', 0x9747b28c, 0x24884cba],
      ['ππππππππ', 0x9747b28c, 0xd58063c1],
      ['The quick brown fox jumps over the lazy dog', 0x9747b28c, 0x2fa826cd],
    ];
    for (const [text, seed, expected] of vectors) {
      assert.equal(murmur3(text, seed), expected, JSON.stringify(text));
    }
  });

  void test('hashes the UTF-8 bytes of any string, lone surrogates included', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 40 }), fc.nat(), (text, seed) => {
        assert.equal(murmur3(text, seed), murmurBytes(Buffer.from(text, 'utf8'), seed));
      }),
      { numRuns: 500 },
    );
    assert.equal(murmur3('\ud800x\udfff', 7), murmurBytes(Buffer.from('\ud800x\udfff', 'utf8'), 7));
  });
});

void describe('lnUnit', () => {
  void test('agrees with Math.log to 1e-13 and never decreases', () => {
    const edges = [0, 1, 2, 3, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff];
    const samples = fc.sample(fc.nat({ max: 0xffffffff }), 2000).concat(edges);
    samples.sort((a, b) => a - b);
    let previous = -Infinity;
    for (const h of samples) {
      const v = lnUnit(h);
      const exact = Math.log((h + 0.5) / 2 ** 32);
      assert.ok(Math.abs(v - exact) <= 1e-13 * Math.max(1, Math.abs(exact)), `h=${h}: ${v} vs ${exact}`);
      assert.ok(v >= previous, `not monotone at ${h}`);
      assert.ok(v < 0);
      previous = v;
    }
  });
});

void describe('jumpHash', () => {
  void test('is bit-identical to the 64-bit reference', () => {
    fc.assert(
      fc.property(
        fc.nat({ max: 0xffffffff }),
        fc.nat({ max: 0xffffffff }),
        fc.integer({ min: 1, max: 100_000 }),
        (hi, lo, n) => {
          assert.equal(jumpHash(hi, lo, n), jumpReference((BigInt(hi) << 32n) | BigInt(lo), n));
        },
      ),
      { numRuns: 500 },
    );
  });
});

void describe('partitionForKey', () => {
  void test('stays in range, is stable, and only moves keys to the new partition when the count grows', () => {
    const keys = Array.from({ length: 5000 }, (_, i) => `user-${i}`);
    for (const n of [1, 2, 7, 64, 1000]) {
      let moved = 0;
      for (const key of keys) {
        const a = partitionForKey(key, n);
        const b = partitionForKey(key, n + 1);
        assert.ok(a >= 0 && a < n);
        assert.equal(partitionForKey(key, n), a);
        if (a !== b) {
          assert.equal(b, n, 'a key may only move to the new partition');
          moved++;
        }
      }
      const expected = keys.length / (n + 1);
      assert.ok(
        Math.abs(moved - expected) < 5 * Math.sqrt(expected) + 5,
        `n=${n}: moved ${moved}, expected ~${expected}`,
      );
    }
  });

  void test('depends on the seed and rejects bad arguments with MUSTER_INVALID_ARGUMENT', () => {
    const differ = Array.from({ length: 100 }, (_, i) => `k${i}`).filter(
      (k) => partitionForKey(k, 1000, 1) !== partitionForKey(k, 1000, 2),
    );
    assert.ok(differ.length > 90);
    for (const bad of [0, -1, 1.5, Number.NaN, 2 ** 31]) {
      assert.throws(
        () => partitionForKey('k', bad),
        (e) => isMusterError(e, 'MUSTER_INVALID_ARGUMENT'),
      );
    }
    assert.throws(
      () => partitionForKey('k', 10, -1),
      (e) => isMusterError(e, 'MUSTER_INVALID_ARGUMENT'),
    );
    assert.throws(
      () => partitionForKey(42 as unknown as string, 10),
      (e) => isMusterError(e, 'MUSTER_INVALID_ARGUMENT'),
    );
  });
});
