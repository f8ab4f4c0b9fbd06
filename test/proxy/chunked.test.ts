/** The chunked transfer coding decoder (RFC 9112 §7.1): split anywhere, and every way it refuses. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ChunkedDecoder } from '../../src/proxy/chunked.js';

/** Decodes `text` fed in pieces of `step` bytes: the body, and what followed it. */
function decode(text: string, step: number): { body: string; rest: string } {
  const d = new ChunkedDecoder((why) => new Error(why));
  const bytes = Buffer.from(text, 'latin1');
  let body = '';
  for (let at = 0; at < bytes.length; at += step) {
    const piece = bytes.subarray(at, Math.min(bytes.length, at + step));
    const end = d.decode(piece, 0, (c) => (body += c.toString('latin1')));
    if (end >= 0)
      return {
        body,
        rest: piece.subarray(end).toString('latin1') + bytes.subarray(at + step).toString('latin1'),
      };
  }
  throw new Error('the body did not end');
}

describe('proxy: the chunked decoder', { timeout: 10_000 }, () => {
  const body = '5;name=value\r\nhello\r\n6 ; x\r\n world\r\nA\r\n0123456789\r\n0\r\nx-t: 1\r\n\r\nNEXT';
  test('decodes whatever the split: extensions and trailers dropped, the bytes after the body left', () => {
    for (const step of [1, 2, 3, 7, 1000]) {
      assert.deepEqual(decode(body, step), { body: 'hello world0123456789', rest: 'NEXT' }, `step ${step}`);
    }
  });

  const refused: [string, string][] = [
    ['a non-hex size', 'zz\r\nhello\r\n0\r\n\r\n'],
    ['a negative size', '-5\r\nhello\r\n0\r\n\r\n'],
    ['an empty size', '\r\nhello\r\n0\r\n\r\n'],
    ['a size over 13 digits', '10000000000000\r\n'],
    ['data longer than its size', '2\r\nhello\r\n0\r\n\r\n'],
    ['a bare LF', '5\nhello\r\n0\r\n\r\n'],
    ['an invalid trailer', '0\r\nno colon\r\n\r\n'],
    ['an over-long line', `1;${'x'.repeat(5000)}\r\n`],
  ];
  for (const [what, text] of refused) {
    test(`${what}: refused`, () => {
      // refused by the decoder itself, not merely unfinished
      const byDecoder = (err: Error): boolean => !err.message.includes('did not end');
      assert.throws(() => decode(text, 1000), byDecoder);
      assert.throws(() => decode(text, 1), byDecoder);
    });
  }
});
