/**
 * The registry of started groups: written while a group lives, removed when it is gone, and swept at
 * start — killing a recorded group only while its leader's start time still matches.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { isMusterError } from '../../src/errors.js';
import {
  isAlive,
  type ProcessRecord,
  ProcessRegistry,
  readStartTime,
  spawnProcess,
} from '../../src/process/index.js';
import { waitFor } from '../../src/testing/index.js';

const T = { timeout: 30_000 };

/** A `sleep` in its own group, started outside the kernel: what a dead parent leaves behind. */
function orphan(): number {
  const child = spawn('sleep', ['1000'], { stdio: 'ignore', detached: true });
  child.unref();
  return child.pid!;
}

function write(dir: string, record: ProcessRecord): void {
  writeFileSync(join(dir, `${record.pid}.json`), JSON.stringify(record));
}

/** An owner that is certainly gone: our own pid with a start time that is not ours. */
const deadOwner = { pid: process.pid, startTime: '1' };

describe('process registry', () => {
  test('a spawned group is recorded while it lives and removed when it is gone', T, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'muster-registry-'));
    try {
      const registry = new ProcessRegistry(dir);
      const h = await spawnProcess({ command: ['sleep', '1000'], registry, label: 'svc/p3' });
      const [record] = registry.list();
      assert.ok(record);
      assert.equal(record.pid, h.pid);
      assert.equal(record.pgid, h.pgid);
      assert.equal(record.startTime, h.startTime);
      assert.equal(record.startTime, readStartTime(h.pid));
      assert.equal(record.label, 'svc/p3');
      assert.deepEqual(record.command, ['sleep', '1000']);
      assert.equal(record.owner.pid, process.pid);
      // a live owner's records are not swept
      assert.deepEqual((await registry.sweep()).killed, 0);
      assert.ok(isAlive(h.pid));
      await h.stop();
      assert.deepEqual(registry.list(), []);
      assert.deepEqual(readdirSync(dir), []);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('sweep kills a group whose leader start time matches; not one whose pid was reused', T, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'muster-registry-'));
    const matching = orphan();
    const reused = orphan();
    const alsoInGroup = spawn('sleep', ['1000'], { stdio: 'ignore' }); // our child, in our group
    try {
      const registry = new ProcessRegistry(dir);
      await waitFor(() => readStartTime(matching) !== undefined && readStartTime(reused) !== undefined, {
        timeoutMs: 5000,
      });
      const base = { label: 'x', command: ['sleep', '1000'], startedAt: Date.now(), owner: deadOwner };
      write(dir, { ...base, pid: matching, pgid: matching, startTime: readStartTime(matching)! });
      // the same pid, but another process than the one recorded (its start time differs)
      write(dir, {
        ...base,
        pid: reused,
        pgid: reused,
        startTime: String(Number(readStartTime(reused)) - 1),
      });
      // a process that is long gone
      write(dir, { ...base, pid: 4_000_000, pgid: 4_000_000, startTime: '12345' });
      // a live owner (pid 1 with its own start time): left alone
      const pid1 = { pid: 1, startTime: readStartTime(1)! };
      write(dir, { ...base, pid: alsoInGroup.pid!, pgid: alsoInGroup.pid!, startTime: '0', owner: pid1 });
      const report = await registry.sweep();
      assert.equal(report.killed, 1);
      assert.equal(report.stale, 2);
      assert.equal(report.skipped, 1);
      assert.deepEqual(
        report.killedRecords.map((r) => r.pid),
        [matching],
      );
      assert.equal(isAlive(matching), false, 'the matching group was killed');
      assert.equal(isAlive(reused), true, 'the reused pid was not touched');
      assert.equal(isAlive(alsoInGroup.pid!), true);
      assert.deepEqual(
        registry.list().map((r) => r.pid),
        [alsoInGroup.pid],
      );
      assert.ok(!existsSync(join(dir, `${matching}.json`)));
    } finally {
      for (const pid of [matching, reused]) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // gone
        }
      }
      alsoInGroup.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("sweep kills strays carrying a dead owner's marker (members left by a dead leader)", T, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'muster-registry-'));
    const env = { ...process.env, MUSTER_PROCESS: `${deadOwner.pid}.${deadOwner.startTime}/7` };
    const stray = spawn('sleep', ['1000'], { stdio: 'ignore', detached: true, env });
    stray.unref();
    const otherEnv = { ...process.env, MUSTER_PROCESS: `${deadOwner.pid}.${deadOwner.startTime}9/7` };
    const other = spawn('sleep', ['1000'], { stdio: 'ignore', detached: true, env: otherEnv });
    other.unref();
    try {
      const registry = new ProcessRegistry(dir);
      // the leader of the stray's group is gone; its record remains
      write(dir, {
        pid: 4_000_001,
        pgid: 4_000_001,
        startTime: '5',
        label: 'gone',
        command: ['x'],
        startedAt: 0,
        owner: deadOwner,
      });
      await waitFor(
        () => readStartTime(stray.pid!) !== undefined && readStartTime(other.pid!) !== undefined,
        {
          timeoutMs: 5000,
        },
      );
      const report = await registry.sweep();
      assert.equal(report.stale, 1);
      assert.equal(report.strays, 1);
      await waitFor(() => !isAlive(stray.pid!), { timeoutMs: 5000, what: 'the stray to die' });
      assert.ok(isAlive(other.pid!), "another owner's process (a longer token) was not touched");
    } finally {
      stray.kill('SIGKILL');
      other.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a record that cannot be written fails the spawn, and the command never runs', T, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'muster-registry-'));
    const flag = join(dir, 'ran');
    try {
      const registry = new ProcessRegistry(join(dir, 'records'));
      rmSync(registry.dir, { recursive: true }); // the record's write fails (ENOENT)
      await assert.rejects(
        spawnProcess({ command: ['/bin/sh', '-c', `touch ${flag}`], registry }),
        (err) => isMusterError(err, 'MUSTER_SPAWN_FAILED') && /registry/.test(err.message),
      );
      // the wrapper was killed while it waited for its go-ahead: the command did not run
      assert.equal(existsSync(flag), false);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a registry needs a directory', T, () => {
    assert.throws(
      () => new ProcessRegistry(''),
      (err) => isMusterError(err, 'MUSTER_INVALID_ARGUMENT'),
    );
  });
});
