import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { ERROR_CODES, httpStatusOf, isRetryable, MusterError } from '../../src/errors.js';

const doc = readFileSync(new URL('../../../docs/errors.md', import.meta.url), 'utf8');

test('docs/errors.md lists every error code with its retryable mark and HTTP status', () => {
  for (const [code, info] of Object.entries(ERROR_CODES)) {
    const row = doc.split('\n').find((line) => line.startsWith(`| \`${code}\` |`));
    assert.ok(row, `docs/errors.md has no row for ${code}`);
    assert.match(
      row,
      new RegExp(`^\\| \`${code}\` \\| ${info.retryable ? 'yes' : 'no'} \\| ${info.http} \\|`),
      `${code}: retryable mark or HTTP status differs`,
    );
  }
});

test('every error code has an HTTP status, and an unknown code answers 500', () => {
  for (const [code, info] of Object.entries(ERROR_CODES)) {
    assert.ok(Number.isInteger(info.http) && info.http >= 400 && info.http <= 599, `${code}: ${info.http}`);
    assert.equal(httpStatusOf(code), info.http);
    // Retryable codes tell an HTTP client to come back: 503 or 504, never a 4xx it would not retry.
    if (info.retryable) assert.ok([503, 504].includes(info.http), `${code} is retryable but ${info.http}`);
  }
  assert.equal(httpStatusOf('MUSTER_INVALID_ARGUMENT'), 400);
  assert.equal(httpStatusOf('MUSTER_NOT_OWNER'), 421);
  assert.equal(httpStatusOf('MUSTER_NO_SUCH_CODE'), 500);
  assert.equal(httpStatusOf('toString'), 500);
});

test('every code in docs/errors.md exists', () => {
  for (const m of doc.matchAll(/^\| `(MUSTER_[A-Z_]+)` \|/gm)) {
    assert.ok((m[1] as string) in ERROR_CODES, `${m[1]} is documented but not defined`);
  }
});

test('MusterError carries code, retryable mark, details and cause', () => {
  const cause = new Error('socket hang up');
  const err = new MusterError('MUSTER_UNAVAILABLE', 'store unreachable', { cause, details: { key: '/a' } });
  assert.equal(err.code, 'MUSTER_UNAVAILABLE');
  assert.equal(err.retryable, true);
  assert.equal(isRetryable(err), true);
  assert.equal(err.cause, cause);
  assert.equal(err.details.key, '/a');
  assert.deepEqual(JSON.parse(JSON.stringify(err)), {
    code: 'MUSTER_UNAVAILABLE',
    message: 'store unreachable',
    retryable: true,
    details: { key: '/a' },
  });
  assert.equal(new MusterError('MUSTER_UNAVAILABLE', 'x', { retryable: false }).retryable, false);
  assert.equal(isRetryable(new Error('plain')), false);
});
