/** The bounded waits every test leans on: they must fail in time, also when a check itself hangs. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { waitFor, withTimeout } from '../../src/testing/index.js';

describe('bounded waits', () => {
  test('waitFor resolves once the predicate holds, and rejects naming what was awaited', async () => {
    let n = 0;
    await waitFor(() => ++n === 3, { timeoutMs: 5_000, intervalMs: 1 });
    assert.equal(n, 3);
    await assert.rejects(
      waitFor(() => false, { timeoutMs: 20, intervalMs: 5, what: 'never' }),
      {
        message: 'never not met within 20 ms',
      },
    );
  });

  test('waitFor rejects in time when a check never returns', { timeout: 10_000 }, async () => {
    await assert.rejects(
      waitFor(() => new Promise<boolean>(() => undefined), {
        timeoutMs: 50,
        intervalMs: 5,
        what: 'a stuck probe',
      }),
      { message: 'a stuck probe not met within 50 ms (its last check had not returned)' },
    );
  });

  test('withTimeout passes a result or an error through, and rejects with its message after the time', async () => {
    assert.equal(await withTimeout(Promise.resolve(7), 1_000, 'x'), 7);
    await assert.rejects(withTimeout(Promise.reject(new Error('own')), 1_000, 'x'), { message: 'own' });
    await assert.rejects(withTimeout(new Promise(() => undefined), 10, 'too slow'), { message: 'too slow' });
  });
});
