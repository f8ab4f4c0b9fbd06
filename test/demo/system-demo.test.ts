import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { describe, test } from 'node:test';

const BIN = new URL('../../../bin/muster.js', import.meta.url).pathname;

/** Pids of live processes (zombies excluded) whose environment holds `marker`. */
function markedProcesses(marker: string): number[] {
  const found: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      if (!readFileSync(`/proc/${name}/environ`, 'latin1').includes(marker)) continue;
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      if (stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z') found.push(Number(name));
    } catch {
      // gone, or not ours to read
    }
  }
  return found;
}

async function waitNoneLeft(marker: string, timeoutMs: number): Promise<number[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const left = markedProcesses(marker);
    if (left.length === 0 || Date.now() > deadline) return left;
    await new Promise((r) => setTimeout(r, 100));
  }
}

function runDemo(
  args: string[],
  marker: string,
  onStart?: (pid: number) => void,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN, 'demo', ...args], {
      env: { ...process.env, DEMO_TEST_MARKER: marker },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => {
      stderr += c.toString();
      if (onStart !== undefined && stderr.includes('step 1:')) {
        const f = onStart;
        onStart = undefined;
        f(child.pid!);
      }
    });
    child.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

describe('muster demo (the whole system)', () => {
  test('every step passes, no GET fails, and no process is left', { timeout: 90_000 }, async () => {
    const marker = `demo-test-${randomUUID()}`;
    const r = await runDemo(['--json'], marker);
    const out = `${r.stderr}\n${r.stdout}`;
    assert.equal(r.code, 0, out);
    const result = JSON.parse(r.stdout.trim().split('\n').pop()!) as {
      ok: boolean;
      failedGets: number;
      dashboard: string;
      steps: { step: string; ok: boolean; detail: Record<string, unknown> }[];
    };
    assert.equal(result.ok, true, out);
    assert.equal(result.failedGets, 0, out);
    assert.deepEqual(
      result.steps.map((s) => s.step),
      ['routing', 'scheduled-config', 'kill-agent', 'restart-backend', 'store-paused'],
    );
    for (const s of result.steps) assert.equal(s.ok, true, `${s.step}: ${JSON.stringify(s.detail)}`);
    assert.equal(result.steps[4]!.detail['staleCode'], 'MUSTER_STALE_CONFIG');
    assert.match(result.dashboard, /^http:\/\/127\.0\.0\.1:\d+\/$/);
    assert.ok(r.stderr.includes('dashboard: http://127.0.0.1:'), out);
    assert.deepEqual(await waitNoneLeft(marker, 5000), [], 'processes left behind');
  });

  test('Ctrl-C stops every process it started', { timeout: 60_000 }, async () => {
    const marker = `demo-test-${randomUUID()}`;
    const r = await runDemo(['--json'], marker, (pid) => process.kill(pid, 'SIGINT'));
    assert.equal(r.code, 130, `${r.stderr}\n${r.stdout}`);
    assert.deepEqual(await waitNoneLeft(marker, 5000), [], 'processes left behind');
  });

  test('the checker sees a process left behind', { timeout: 10_000 }, async () => {
    const marker = `demo-test-${randomUUID()}`;
    const child = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 30000)'], {
      env: { ...process.env, DEMO_TEST_MARKER: marker },
      stdio: 'ignore',
    });
    await new Promise((r) => child.once('spawn', r));
    try {
      assert.deepEqual(markedProcesses(marker), [child.pid]);
    } finally {
      child.kill('SIGKILL');
    }
    assert.deepEqual(await waitNoneLeft(marker, 5000), []);
  });

  test('--only rejects an unknown scenario', { timeout: 30_000 }, async () => {
    const r = await runDemo(['--only', 'nope'], `demo-test-${randomUUID()}`);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /--only must be config/);
  });
});
