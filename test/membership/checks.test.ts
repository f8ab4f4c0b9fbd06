import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join as joinPath } from 'node:path';
import { after, describe, test } from 'node:test';
import { ManualClock } from '../../src/clock.js';
import { isMusterError } from '../../src/errors.js';
import { type CheckTransition, HealthChecks, type HealthStatus } from '../../src/membership/index.js';
import { waitFor } from '../../src/testing/index.js';

/** Handlers that record every transition, for "once per transition" assertions. */
function recorder(): {
  log: string[];
  handlers: {
    onPassing: (t: CheckTransition) => void;
    onWarning: (t: CheckTransition) => void;
    onFailing: (t: CheckTransition) => void;
  };
} {
  const log: string[] = [];
  const rec = (t: CheckTransition): void => void log.push(`${t.previous}->${t.status}`);
  return { log, handlers: { onPassing: rec, onWarning: rec, onFailing: rec } };
}

const CYCLE = ['passing->warning', 'warning->failing', 'failing->passing'];

describe('TTL checks (manual clock)', () => {
  test('passing → warning → failing → passing, each handler once per transition', async () => {
    const clock = new ManualClock();
    const checks = new HealthChecks({ clock });
    const { log, handlers } = recorder();
    const c = checks.add({ kind: 'ttl', name: 't', ttl: '5s', initialStatus: 'passing', ...handlers });
    c.pass();
    c.warn('slow');
    c.warn('still slow');
    c.fail('stuck');
    c.fail('still stuck');
    c.pass();
    c.pass();
    assert.deepEqual(log, CYCLE);
    assert.equal(c.status, 'passing');
    checks.close();
  });

  test('no report within the TTL fails the check; each silent TTL counts as one more failing result', async () => {
    const clock = new ManualClock();
    const checks = new HealthChecks({ clock });
    const { log, handlers } = recorder();
    const c = checks.add({
      kind: 'ttl',
      name: 't',
      ttl: '2s',
      initialStatus: 'passing',
      thresholds: { failing: 2 },
      ...handlers,
    });
    await clock.tick(1900, 100);
    c.pass(); // restarts the TTL
    await clock.tick(1900, 100);
    assert.equal(c.status, 'passing');
    await clock.tick(200, 100); // first silent TTL: below the threshold of 2
    assert.equal(c.status, 'passing');
    await clock.tick(2000, 100); // second: flips
    assert.equal(c.status, 'failing');
    assert.match(c.output, /no report within the TTL of 2s/);
    assert.deepEqual(log, ['passing->failing']);
    checks.close();
  });

  test('thresholds: one blip does not flap', async () => {
    const clock = new ManualClock();
    const checks = new HealthChecks({ clock });
    const { log, handlers } = recorder();
    const c = checks.add({
      kind: 'ttl',
      name: 't',
      ttl: '1h',
      initialStatus: 'passing',
      thresholds: { passing: 2, warning: 2, failing: 3 },
      ...handlers,
    });
    for (const s of [
      'failing',
      'passing',
      'warning',
      'passing',
      'failing',
      'failing',
      'passing',
    ] as HealthStatus[])
      c.report(s);
    assert.deepEqual(log, [], 'no streak reached its threshold');
    c.report('failing');
    c.report('failing');
    c.report('failing');
    assert.deepEqual(log, ['passing->failing']);
    c.report('passing');
    assert.equal(c.status, 'failing');
    c.report('passing');
    assert.deepEqual(log, ['passing->failing', 'failing->passing']);
    checks.close();
  });

  test('the aggregate is the worst counted status; events, actions and throwing handlers', async () => {
    const clock = new ManualClock();
    const restarts: string[] = [];
    const checks = new HealthChecks({ clock, actions: { restart: (t) => void restarts.push(t.check) } });
    const changes: HealthStatus[] = [];
    checks.on('change', (h) => changes.push(h));
    const errors: unknown[] = [];
    checks.on('error', (e) => errors.push(e));
    assert.equal(checks.health(), 'passing', 'no checks: passing');
    const a = checks.add({
      kind: 'ttl',
      name: 'a',
      ttl: '1h',
      initialStatus: 'passing',
      actions: ['restart'],
      onFailing: () => {
        throw new Error('handler bug');
      },
    });
    const b = checks.add({
      kind: 'ttl',
      name: 'b',
      ttl: '1h',
      initialStatus: 'passing',
      markUnhealthy: false,
    });
    b.fail();
    assert.equal(checks.health(), 'passing');
    a.warn();
    assert.equal(checks.health(), 'warning');
    a.fail();
    assert.equal(checks.health(), 'failing');
    assert.deepEqual(restarts, ['a']);
    assert.equal(errors.length, 1);
    assert.deepEqual(checks.statuses(), { a: 'failing', b: 'failing' });
    assert.ok(changes.includes('failing'));
    assert.throws(
      () => checks.add({ kind: 'ttl', name: 'a', ttl: '1s' }),
      (e) => isMusterError(e, 'MUSTER_INVALID_ARGUMENT'),
    );
    assert.throws(
      () => checks.add({ kind: 'ttl', name: '', ttl: '1s' }),
      (e) => isMusterError(e, 'MUSTER_INVALID_ARGUMENT'),
    );
    assert.throws(
      () => checks.add({ kind: 'http', name: 'h', url: 'not a url' }),
      (e) => isMusterError(e, 'MUSTER_INVALID_ARGUMENT'),
    );
    assert.throws(
      () => checks.add({ kind: 'script', name: 's', command: '' }),
      (e) => isMusterError(e, 'MUSTER_INVALID_ARGUMENT'),
    );
    assert.throws(
      () => checks.add({ kind: 'ttl', name: 'z', ttl: 0 }),
      (e) => isMusterError(e, 'MUSTER_INVALID_ARGUMENT'),
    );
    assert.throws(
      () => a.report('bad' as HealthStatus),
      (e) => isMusterError(e, 'MUSTER_INVALID_ARGUMENT'),
    );
    assert.ok(checks.remove('b'));
    assert.deepEqual(Object.keys(checks.statuses()), ['a']);
    checks.close();
  });
});

describe('script checks (real processes)', () => {
  const dir = mkdtempSync(joinPath(tmpdir(), 'muster-checks-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('exit 0 passing, 1 warning, 2 failing; handlers once per transition', async () => {
    const file = joinPath(dir, 'code');
    const runsFile = joinPath(dir, 'runs');
    writeFileSync(file, '0');
    writeFileSync(runsFile, '');
    const runs = (): number => readFileSync(runsFile, 'utf8').length; // one byte per run started
    const checks = new HealthChecks();
    const { log, handlers } = recorder();
    const c = checks.add({
      kind: 'script',
      name: 's',
      command: `printf x >> ${runsFile}; echo checking; exit $(cat ${file})`,
      interval: '30ms',
      timeout: '5s',
      initialStatus: 'passing',
      ...handlers,
    });
    try {
      const expectNext = async (code: string, transitions: number): Promise<void> => {
        writeFileSync(file, code);
        await waitFor(() => log.length === transitions, {
          timeoutMs: 5000,
          what: `transition to exit ${code}`,
        });
      };
      await expectNext('1', 1);
      await expectNext('2', 2);
      await expectNext('0', 3);
      // Three more runs recorded (runs are sequential: the fourth to start proves the third ended),
      // and no repeated handler calls.
      const seen = runs();
      await waitFor(() => runs() >= seen + 4, { timeoutMs: 5000, what: 'three more runs' });
      assert.deepEqual(log, CYCLE);
      assert.match(c.output, /checking/);
    } finally {
      checks.close();
    }
  });

  test('a hanging script is killed (with its children) at its timeout and fails', async () => {
    const pidFile = joinPath(dir, 'pid');
    const checks = new HealthChecks();
    const c = checks.add({
      kind: 'script',
      name: 'hang',
      command: `sleep 30 & echo $! > ${pidFile}; wait`,
      interval: '1h',
      timeout: '300ms',
      initialStatus: 'passing',
    });
    try {
      const t0 = performance.now();
      await waitFor(() => c.status === 'failing', { timeoutMs: 5000, what: 'timed out' });
      const elapsed = performance.now() - t0;
      assert.ok(elapsed < 2000, `failed after ${elapsed} ms`);
      assert.match(c.output, /timed out/);
      const pid = Number(readFileSync(pidFile, 'utf8'));
      await waitFor(
        () => {
          try {
            process.kill(pid, 0);
            return false;
          } catch {
            return true;
          }
        },
        { timeoutMs: 3000, what: 'the script child is gone' },
      );
    } finally {
      checks.close();
    }
  });

  test('a command that cannot start fails', async () => {
    const checks = new HealthChecks();
    const c = checks.add({
      kind: 'script',
      name: 'x',
      command: ['/nonexistent/program'],
      interval: '1h',
      initialStatus: 'passing',
    });
    await waitFor(() => c.status === 'failing', { timeoutMs: 5000 });
    assert.match(c.output, /could not start/);
    checks.close();
  });
});

describe('HTTP checks (real server)', () => {
  let status = 200;
  let probes = 0;
  const server: Server = createServer((req, res) => {
    if (req.url === '/hang') return; // never answers
    probes++;
    res.writeHead(status, { 'content-type': 'text/plain' });
    res.end(`status ${status}`);
  });
  after(() => {
    server.closeAllConnections();
    server.close();
  });

  test('2xx passing, 429 warning, 500 failing, back to passing; handlers once per transition', async () => {
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const { port } = server.address() as AddressInfo;
    const checks = new HealthChecks();
    const { log, handlers } = recorder();
    checks.add({
      kind: 'http',
      name: 'h',
      url: `http://127.0.0.1:${port}/health`,
      interval: '30ms',
      timeout: '2s',
      initialStatus: 'passing',
      ...handlers,
    });
    try {
      for (const [code, n] of [
        [429, 1],
        [503, 2],
        [204, 3],
      ] as const) {
        status = code;
        await waitFor(() => log.length === n, { timeoutMs: 5000, what: `HTTP ${code}` });
      }
      // Three more probes recorded (the fourth request proves the third was answered and recorded),
      // and no repeated handler calls.
      const seen = probes;
      await waitFor(() => probes >= seen + 4, { timeoutMs: 5000, what: 'three more probes' });
      assert.deepEqual(log, CYCLE);
    } finally {
      checks.close();
    }
  });

  test('a request that hangs fails at the timeout', async () => {
    const { port } = server.address() as AddressInfo;
    const checks = new HealthChecks();
    const c = checks.add({
      kind: 'http',
      name: 'hang',
      url: `http://127.0.0.1:${port}/hang`,
      interval: '1h',
      timeout: '200ms',
      initialStatus: 'passing',
    });
    const t0 = performance.now();
    await waitFor(() => c.status === 'failing', { timeoutMs: 5000 });
    assert.ok(performance.now() - t0 < 2000);
    assert.match(c.output, /timed out/);
    checks.close();
  });

  test('a refused connection fails', async () => {
    const checks = new HealthChecks();
    const c = checks.add({
      kind: 'http',
      name: 'x',
      url: 'http://127.0.0.1:1/',
      interval: '1h',
      initialStatus: 'passing',
    });
    await waitFor(() => c.status === 'failing', { timeoutMs: 5000 });
    checks.close();
  });
});
