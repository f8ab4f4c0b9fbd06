/**
 * The client side's request parser (llhttp, strict, plus muster's own rules): what it accepts, and
 * every way it refuses — each a smuggling or confusion vector, answered 400 (431 for a head too large).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  RequestParser,
  type ClientRequest,
  type FeedResult,
  type Refusal,
} from '../../src/proxy/request-parser.js';

const MAX = 16 * 1024;

interface Parsed {
  readonly requests: ClientRequest[];
  readonly bodies: string[];
  readonly completed: number;
  readonly result: FeedResult;
}

/** Feeds `parts` one after the other (a head may arrive in pieces). */
function parse(...parts: string[]): Parsed {
  const requests: ClientRequest[] = [];
  const bodies: string[] = [];
  let completed = 0;
  const p = new RequestParser(MAX, {
    request: (r) => {
      requests.push(r);
      bodies.push('');
    },
    body: (c) => (bodies[bodies.length - 1] += c.toString('latin1')),
    complete: () => completed++,
  });
  let result: FeedResult;
  for (const part of parts) {
    result = p.feed(Buffer.from(part, 'latin1'));
    if (result !== undefined) break;
  }
  p.close();
  return { requests, bodies, completed, result };
}

function accepted(...parts: string[]): ClientRequest {
  const r = parse(...parts);
  assert.equal(r.result, undefined, `accepted: ${JSON.stringify(r.result)}`);
  assert.equal(r.requests.length, 1);
  return r.requests[0] as ClientRequest;
}

describe('proxy: the request parser (llhttp strict + RFC 9112 rules)', { timeout: 10_000 }, () => {
  test('Expect (RFC 9110 §10.1.1): 100-continue from 1.1 only; any other expectation: 417', () => {
    const head = (version: string, expect: string): string =>
      `POST / HTTP/${version}\r\nHost: h\r\nExpect: ${expect}\r\nContent-Length: 1\r\n\r\n`;
    assert.equal(accepted(head('1.1', '100-Continue')).expectContinue, true);
    // no 1xx to an HTTP/1.0 client: its 100-continue is ignored, and so is any other expectation
    assert.equal(accepted(head('1.0', '100-continue')).expectContinue, false);
    assert.equal(accepted(head('1.0', 'something')).expectContinue, false);
    const refused = parse(head('1.1', 'something')).result as Refusal;
    assert.equal(refused.status, 417);
    assert.match(refused.reason, /"something" cannot be met/);
  });

  test('a head: request line, fields as sent, joined fields, body framing, keep-alive', () => {
    const r = parse(
      '\r\nPOST /a?b=1 HTTP/1.1\r\nHost: h\r\nX-Key:  k1 \r\nx-key: k2\r\nCookie: a=1\r\ncookie: b=2\r\nContent-Length: 5\r\n\r\nhello',
    );
    assert.equal(r.result, undefined);
    const h = r.requests[0] as ClientRequest;
    assert.equal(h.method, 'POST');
    assert.equal(h.url, '/a?b=1');
    assert.equal(h.minor, 1);
    assert.deepEqual(h.rawHeaders.slice(0, 4), ['Host', 'h', 'X-Key', 'k1']);
    assert.equal(h.headers['x-key'], 'k1, k2');
    assert.equal(h.headers['cookie'], 'a=1; b=2');
    assert.equal(h.hasBody, true);
    assert.equal(h.chunked, false);
    assert.equal(h.keepAlive, true);
    assert.deepEqual(r.bodies, ['hello']);
    assert.equal(r.completed, 1);
    const c = parse(
      'POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\nExpect: 100-Continue\r\n\r\n',
      '5;ext=1\r\nhello\r\n0\r\n\r\n',
    );
    assert.equal(c.result, undefined);
    assert.equal(c.requests[0]?.chunked, true);
    assert.equal(c.requests[0]?.expectContinue, true);
    assert.deepEqual(c.bodies, ['hello']);
    assert.equal(accepted('GET / HTTP/1.0\r\n\r\n').keepAlive, false);
    assert.equal(accepted('GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n').keepAlive, true);
    assert.equal(accepted('GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n').keepAlive, false);
    assert.equal(accepted('GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n').hasBody, false);
    assert.equal(accepted('GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 00\r\n\r\n').hasBody, false);
    // HTTP/1.0 has no Host requirement
    assert.equal(accepted('GET / HTTP/1.0\r\n\r\n').url, '/');
  });

  test('a head in pieces, pipelined requests, and more than 32 fields (llhttp flushes them early)', () => {
    const h = accepted('GET /x HT', 'TP/1.1\r\nHo', 'st: h\r\n', '\r\n');
    assert.equal(h.url, '/x');
    assert.equal(h.headers['host'], 'h');
    const two = parse(
      'GET /1 HTTP/1.1\r\nHost: h\r\n\r\nPOST /2 HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nokGET /3 HTTP/1.1\r\nHost: h\r\n\r\n',
    );
    assert.deepEqual(
      two.requests.map((r) => r.url),
      ['/1', '/2', '/3'],
    );
    assert.deepEqual(two.bodies, ['', 'ok', '']);
    assert.equal(two.completed, 3);
    // complete once each, whether told with the head (no body) or by llhttp (a body, even an empty one)
    const empty = parse(
      'POST /4 HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\nPOST /5 HTTP/1.1\r\nHost: h\r\nContent-Length: 00\r\n\r\nPOST /6 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /7 HTTP/1.1\r\nHost: h\r\n\r\n',
    );
    assert.equal(empty.requests.length, 4);
    assert.equal(empty.completed, 4);
    const fields = Array.from({ length: 50 }, (_, i) => `x-f${i}: v${i}\r\n`).join('');
    const many = accepted(`GET /many HTTP/1.1\r\nHost: h\r\n${fields}`, 'x-last: 1\r\n\r\n');
    assert.equal(many.rawHeaders.length, 104);
    assert.equal(many.headers['x-f49'], 'v49');
    assert.equal(many.url, '/many');
  });

  test('an upgrade stops the parser after the head: the rest is the tunnel’s', () => {
    const r = parse(
      'GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x00rest',
    );
    assert.equal(r.requests[0]?.upgrade, true);
    assert.ok(r.result !== undefined && 'upgrade' in r.result);
    assert.equal(r.result.upgrade.toString('latin1'), '\x81\x00rest');
    assert.equal(r.completed, 0);
  });

  test('a head over the limit is 431', () => {
    const r = parse(`GET / HTTP/1.1\r\nHost: h\r\nx: ${'a'.repeat(MAX)}`);
    assert.equal((r.result as Refusal).status, 431);
    const whole = parse(`GET / HTTP/1.1\r\nHost: h\r\nx: ${'a'.repeat(MAX)}\r\n\r\n`);
    assert.equal((whole.result as Refusal).status, 431);
  });

  const refused: [string, string][] = [
    [
      'Content-Length and Transfer-Encoding',
      'POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n',
    ],
    [
      'two different Content-Lengths',
      'POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 40\r\n\r\n',
    ],
    [
      'a repeated Content-Length',
      'POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n',
    ],
    ['a list of Content-Lengths', 'POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 6\r\n\r\n'],
    ['an invalid Content-Length', 'POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5x\r\n\r\n'],
    ['a negative Content-Length', 'POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n'],
    [
      'a final coding other than chunked',
      'POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n',
    ],
    [
      'chunked twice',
      'POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n',
    ],
    ['Transfer-Encoding in HTTP/1.0', 'POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n'],
    [
      'a bad chunk size',
      'POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n',
    ],
    [
      'chunk data longer than its size',
      'POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX\r\n0\r\n\r\n',
    ],
    ['obs-fold', 'GET / HTTP/1.1\r\nHost: h\r\nx-a: 1\r\n 2\r\n\r\n'],
    ['whitespace before the colon', 'GET / HTTP/1.1\r\nHost : h\r\n\r\n'],
    ['a field without a name', 'GET / HTTP/1.1\r\nHost: h\r\n: h\r\n\r\n'],
    ['a field without a colon', 'GET / HTTP/1.1\r\nhost\r\n\r\n'],
    ['a control character in a value', 'GET / HTTP/1.1\r\nHost: h\r\nx-a: 1\x002\r\n\r\n'],
    ['a bare LF after the request line', 'GET / HTTP/1.1\nHost: h\r\n\r\n'],
    ['a bare LF after a field', 'GET / HTTP/1.1\r\nHost: h\n\r\n'],
    ['two Hosts', 'GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n'],
    ['an HTTP/1.1 request without Host (RFC 9112 §3.2)', 'GET / HTTP/1.1\r\nx-key: k\r\n\r\n'],
    ['garbage', 'GARBAGE\r\n\r\n'],
    ['a lower-case version', 'GET / http/1.1\r\n\r\n'],
    ['HTTP/2.0', 'GET / HTTP/2.0\r\n\r\n'],
    ['a control character in the target', 'GET /\x7f HTTP/1.1\r\nHost: h\r\n\r\n'],
    ['an invalid method', 'G(T / HTTP/1.1\r\nHost: h\r\n\r\n'],
  ];
  for (const [what, text] of refused) {
    test(`${what}: 400`, () => {
      const r = parse(text);
      assert.ok(r.result !== undefined && 'status' in r.result, `refused: ${JSON.stringify(r.requests)}`);
      assert.equal(r.result.status, 400);
      // a refused request never reaches the handler as complete
      assert.equal(r.completed, 0);
    });
  }

  test('after a refusal nothing more is parsed', () => {
    const r = parse('GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n', 'GET /next HTTP/1.1\r\nHost: h\r\n\r\n');
    assert.equal((r.result as Refusal).status, 400);
    assert.equal(r.requests.length, 0);
  });
});
