/** The response framer's head: status lines and field lines it takes (split anywhere) and every way it refuses. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ResponseFramer, type ResponseHead } from '../../src/proxy/response-framer.js';

/** Feeds `text` in pieces of `step` bytes: the head, the body, and whether it ended cleanly. */
function frame(
  text: string,
  step = 1 << 20,
): { head: ResponseHead | undefined; body: string; ended: boolean } {
  const f = new ResponseFramer();
  let head: ResponseHead | undefined;
  let body = '';
  let ended = false;
  f.start(
    { head: (h) => (head = h), data: (c) => (body += c.toString('latin1')), end: () => (ended = true) },
    false,
  );
  const bytes = Buffer.from(text, 'latin1');
  for (let at = 0; at < bytes.length; at += step)
    f.feed(bytes.subarray(at, Math.min(bytes.length, at + step)));
  return { head, body, ended };
}

const byFramer = (err: unknown): boolean => (err as { code?: string }).code === 'UPSTREAM_BAD_RESPONSE';

describe('proxy: the response framer', { timeout: 10_000 }, () => {
  test('a head whole or split anywhere: status, reason, kept field lines, framing', () => {
    const text =
      'HTTP/1.1 200 OK\r\nServer: x\r\nDate: d\r\nConnection: keep-alive, x-hop\r\nX-Hop: 1\r\nContent-Length: 3\r\nKeep-Alive: timeout=5\r\nX-Set: a\r\nX-Set: b\r\n\r\nabc';
    for (const step of [1, 7, 1 << 20]) {
      const r = frame(text, step);
      assert.equal(r.head?.status, 200);
      assert.equal(r.head?.statusText, 'OK');
      assert.equal(r.head?.fields, 'Server: x\r\nDate: d\r\nX-Set: a\r\nX-Set: b\r\n');
      assert.equal(r.head?.length, 3);
      assert.equal(r.head?.keepAlive, true);
      assert.equal(r.head?.keepAliveMs, 5000);
      assert.equal(r.body, 'abc');
      assert.ok(r.ended);
    }
    const bare = frame('HTTP/1.0 404\r\nContent-Length: 0\r\n\r\n');
    assert.equal(bare.head?.status, 404);
    assert.equal(bare.head?.statusText, '');
    assert.equal(bare.head?.keepAlive, false); // HTTP/1.0 without keep-alive
    assert.equal(frame('HTTP/1.1 204 \r\n\r\n').head?.statusText, '');
    assert.equal(
      frame('HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n\r\n').head?.keepAlive,
      false,
    );
    assert.equal(
      frame('HTTP/1.1 200 OK\r\nContent-Length: 1\r\nx-last: v\r\n\r\nz').head?.fields,
      'x-last: v\r\n',
    );
  });

  for (const [what, text] of [
    ['HTTP/2', 'HTTP/2.0 200 OK\r\n\r\n'],
    ['HTTP/1.2', 'HTTP/1.2 200 OK\r\n\r\n'],
    ['a two-digit status', 'HTTP/1.1 20 OK\r\n\r\n'],
    ['a four-digit status', 'HTTP/1.1 2000\r\n\r\n'],
    ['a letter in the status', 'HTTP/1.1 2x0 OK\r\n\r\n'],
    ['no space after the version', 'HTTP/1.1\t200 OK\r\n\r\n'],
    ['a short status line', 'HTTP/1.1 2\r\n\r\n'],
    ['lower-case http', 'http/1.1 200 OK\r\n\r\n'],
    ['a field without a name', 'HTTP/1.1 200 OK\r\n: v\r\n\r\n'],
    ['a field without a colon', 'HTTP/1.1 200 OK\r\nnovalue\r\n\r\n'],
    ['a space in a name', 'HTTP/1.1 200 OK\r\nx y: v\r\n\r\n'],
    ['obs-fold', 'HTTP/1.1 200 OK\r\nx: v\r\n  w\r\n\r\n'],
    ['a bare LF', 'HTTP/1.1 200 OK\r\nx: v\ny: w\r\n\r\n'],
    ['a bare CR', 'HTTP/1.1 200 OK\r\nx: v\ry: w\r\n\r\n'],
    ['a control character', 'HTTP/1.1 200 OK\r\nx: v\x01\r\n\r\n'],
    ['DEL', 'HTTP/1.1 200 OK\r\nx: v\x7f\r\n\r\n'],
    ['a bad Content-Length', 'HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n'],
    ['two Content-Lengths', 'HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n'],
  ] as const) {
    test(`refuses ${what}`, () => {
      assert.throws(() => frame(text), byFramer);
      assert.throws(() => frame(text, 1), byFramer);
    });
  }
  test('a head repeated on one connection gives the same result, whatever the request (the remembered head)', () => {
    const f = new ResponseFramer();
    const seen: { head: ResponseHead; body: string; ended: boolean }[] = [];
    const next = (noBody: boolean): void => {
      const r = { head: undefined as unknown as ResponseHead, body: '', ended: false };
      seen.push(r);
      f.start(
        {
          head: (h) => (r.head = h),
          data: (c) => (r.body += c.toString('latin1')),
          end: () => (r.ended = true),
        },
        noBody,
      );
    };
    const feed = (text: string): void => f.feed(Buffer.from(text, 'latin1'));
    const length = 'HTTP/1.1 200 OK\r\nServer: s\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\n';
    next(false);
    feed(`${length}ab`);
    next(false);
    feed(`${length}cd`);
    next(true); // HEAD: the same text, no body
    feed(length);
    next(false);
    feed(`HTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\n${length}ef`); // an interim head first
    assert.deepEqual(
      seen.map((r) => [r.head.status, r.head.length, r.head.fields, r.head.keepAlive, r.body, r.ended]),
      [
        [200, 2, 'Server: s\r\n', true, 'ab', true],
        [200, 2, 'Server: s\r\n', true, 'cd', true],
        [200, 2, 'Server: s\r\n', true, '', true],
        [200, 2, 'Server: s\r\n', true, 'ef', true],
      ],
    );
    // a head without framing: to HEAD, kept alive and bodyless; then to GET, read until the close
    const open = 'HTTP/1.1 200 OK\r\nX-A: 1\r\n\r\n';
    next(true);
    feed(open);
    const head = seen[4] as { head: ResponseHead; ended: boolean };
    assert.equal(head.head.keepAlive, true);
    assert.equal(head.head.length, undefined);
    assert.ok(head.ended);
    next(false);
    feed(`${open}xyz`);
    const get = seen[5] as { head: ResponseHead; body: string; ended: boolean };
    assert.equal(get.head.keepAlive, false);
    assert.equal(get.body, 'xyz');
    assert.equal(get.ended, false);
    assert.ok(f.untilClose);
    assert.ok(f.closed());
    assert.ok(get.ended);
    // chunked with a Content-Length too: Transfer-Encoding wins, but a HEAD answer shows the length as sent
    const both = 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n';
    for (let i = 0; i < 2; i++) {
      next(false);
      feed(`${both}3\r\nabc\r\n0\r\n\r\n`);
      next(true);
      feed(both);
    }
    const r = seen.slice(6);
    assert.deepEqual(
      r.map((x) => [x.head.length, x.body, x.ended]),
      [
        [undefined, 'abc', true],
        [5, '', true],
        [undefined, 'abc', true],
        [5, '', true],
      ],
    );
  });
});
