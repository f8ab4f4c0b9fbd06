import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { ERROR_CODES, isRetryable, MusterError } from '../../src/errors.js';

const doc = readFileSync(new URL('../../../docs/errors.md', import.meta.url), 'utf8');

test('docs/errors.md lists every error code with its retryable mark', () => {
  for (const [code, info] of Object.entries(ERROR_CODES)) {
    const row = doc.split('\n').find((line) => line.startsWith(`| \`${code}\` |`));
    assert.ok(row, `docs/errors.md has no row for ${code}`);
    assert.match(
      row,
      new RegExp(`^\\| \`${code}\` \\| ${info.retryable ? 'yes' : 'no'} \\|`),
      `${code}: retryable mark differs`,
    );
  }
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
