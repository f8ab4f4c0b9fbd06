/** The strict RFC 9112 request-head parser: what it accepts, and every way it refuses. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { isRefused, parseRequestHead, type RequestHead } from '../../src/proxy/request-head.js';

const MAX = 16 * 1024;

function parse(text: string): ReturnType<typeof parseRequestHead> {
  return parseRequestHead(Buffer.from(text, 'latin1'), MAX);
}

function accepted(text: string): RequestHead {
  const r = parse(text);
  assert.ok(r !== undefined && !isRefused(r), `accepted: ${JSON.stringify(r)}`);
  return r;
}

describe('proxy: the request-head parser (RFC 9112)', { timeout: 10_000 }, () => {
  test('a head: request line, fields as sent, joined fields, body framing, keep-alive', () => {
    const text =
      '\r\nPOST /a?b=1 HTTP/1.1\r\nHost: h\r\nX-Key:  k1 \r\nx-key: k2\r\nCookie: a=1\r\ncookie: b=2\r\nContent-Length: 5\r\n\r\nhello';
    const h = accepted(text);
    assert.equal(h.method, 'POST');
    assert.equal(h.target, '/a?b=1');
    assert.equal(h.minor, 1);
    assert.deepEqual(h.rawHeaders.slice(0, 4), ['Host', 'h', 'X-Key', 'k1']);
    assert.equal(h.headers['x-key'], 'k1, k2');
    assert.equal(h.headers['cookie'], 'a=1; b=2');
    assert.equal(h.body, 5);
    assert.equal(h.keepAlive, true);
    assert.equal(text.slice(h.size), 'hello');
    const c = accepted('POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\nExpect: 100-Continue\r\n\r\n');
    assert.equal(c.body, 'chunked');
    assert.equal(c.expectContinue, true);
    assert.equal(accepted('GET / HTTP/1.0\r\n\r\n').keepAlive, false);
    assert.equal(accepted('GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n').keepAlive, true);
    assert.equal(accepted('GET / HTTP/1.1\r\nConnection: close\r\n\r\n').keepAlive, false);
    assert.equal(
      accepted('GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n').upgrade,
      true,
    );
    assert.equal(accepted('GET / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\n').body, 3);
  });

  test('an incomplete head needs more bytes; past the limit it is 431', () => {
    assert.equal(parse('GET / HTTP/1.1\r\nHost: h\r\n'), undefined);
    const big = `GET / HTTP/1.1\r\nx: ${'a'.repeat(MAX)}`;
    assert.deepEqual(parse(big), { status: 431, reason: 'the request head is too large' });
    assert.equal((parse(`${big}\r\n\r\n`) as { status: number }).status, 431);
  });

  const refused: [string, string][] = [
    [
      'Content-Length and Transfer-Encoding',
      'POST / HTTP/1.1\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n',
    ],
    ['two different Content-Lengths', 'POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 40\r\n\r\n'],
    ['a list of different Content-Lengths', 'POST / HTTP/1.1\r\nContent-Length: 5, 6\r\n\r\n'],
    ['an invalid Content-Length', 'POST / HTTP/1.1\r\nContent-Length: 5x\r\n\r\n'],
    ['a negative Content-Length', 'POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n'],
    ['a final coding other than chunked', 'POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n'],
    ['chunked twice', 'POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n'],
    ['Transfer-Encoding in HTTP/1.0', 'POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n'],
    ['obs-fold', 'GET / HTTP/1.1\r\nx-a: 1\r\n 2\r\n\r\n'],
    ['whitespace before the colon', 'GET / HTTP/1.1\r\nHost : h\r\n\r\n'],
    ['a field without a name', 'GET / HTTP/1.1\r\n: h\r\n\r\n'],
    ['a field without a colon', 'GET / HTTP/1.1\r\nhost\r\n\r\n'],
    ['a control character in a value', 'GET / HTTP/1.1\r\nx-a: 1\x002\r\n\r\n'],
    ['a bare LF', 'GET / HTTP/1.1\nHost: h\r\n\r\n'],
    ['two Hosts', 'GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n'],
    ['garbage', 'GARBAGE\r\n\r\n'],
    ['an extra space in the request line', 'GET  / HTTP/1.1\r\n\r\n'],
    ['a lower-case version', 'GET / http/1.1\r\n\r\n'],
    ['HTTP/2.0', 'GET / HTTP/2.0\r\n\r\n'],
    ['a control character in the target', 'GET /\x7f HTTP/1.1\r\n\r\n'],
    ['an invalid method', 'G(T / HTTP/1.1\r\n\r\n'],
  ];
  for (const [what, text] of refused) {
    test(`${what}: 400`, () => {
      const r = parse(text);
      assert.ok(r !== undefined && isRefused(r), `refused: ${JSON.stringify(r)}`);
      assert.equal(r.status, 400);
    });
  }
});
