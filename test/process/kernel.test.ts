/** The process kernel on real processes: spawn, output, readiness, stop, group kill, errors. */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { connect, createServer } from 'node:net';
import { chmodSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { isMusterError } from '../../src/errors.js';
import type { Writable } from 'node:stream';
import { readStat } from '../../src/process/group.js';
import { WRAPPER } from '../../src/process/spawn.js';
import { isAlive, MAX_LINE_BYTES, type ProcessHandle, spawnProcess } from '../../src/process/index.js';
import { waitFor } from '../../src/testing/index.js';

const T = { timeout: 30_000 };

/** Spawns `sh -c script`, collecting its lines. */
async function sh(
  script: string,
  extra: Partial<Parameters<typeof spawnProcess>[0]> = {},
): Promise<{ h: ProcessHandle; lines: string[]; line: (re: RegExp) => Promise<string> }> {
  const lines: string[] = [];
  const waiters: { re: RegExp; resolve: (l: string) => void }[] = [];
  const h = await spawnProcess({
    command: ['/bin/sh', '-c', script],
    onLine: (stream, line) => {
      lines.push(`${stream}:${line}`);
      for (const w of [...waiters]) if (w.re.test(line)) w.resolve(line);
    },
    ...extra,
  });
  const line = (re: RegExp): Promise<string> => {
    const seen = lines.find((l) => re.test(l.slice(l.indexOf(':') + 1)));
    if (seen !== undefined) return Promise.resolve(seen.slice(seen.indexOf(':') + 1));
    return new Promise((resolve) => waiters.push({ re, resolve }));
  };
  return { h, lines, line };
}

describe('process kernel', () => {
  test('spawns in its own group; lines of stdout and stderr; exit code', T, async () => {
    const { h, lines } = await sh('echo one; echo two >&2; printf "no newline"; exit 7');
    assert.equal(h.pgid, h.pid);
    assert.match(h.startTime, /^\d+$/);
    const exit = await h.exited;
    assert.equal(exit.code, 7);
    assert.equal(exit.signal, null);
    await h.gone;
    assert.equal(h.state, 'gone');
    assert.deepEqual(lines.sort(), ['stderr:two', 'stdout:no newline', 'stdout:one'].sort());
    assert.deepEqual([...h.tail()].sort(), ['no newline', 'one', 'two']);
  });

  test('spawns take one event-loop turn each: a timer due meanwhile runs between them', T, async () => {
    // Every `child_process.spawn` blocks this thread until the child execs; twenty in one turn
    // would starve every timer (a session keep-alive among them) until the last had started.
    let resolved = 0;
    let resolvedWhenTimerRan = -1;
    const timer = new Promise<void>((resolve) =>
      setTimeout(() => {
        resolvedWhenTimerRan = resolved;
        resolve();
      }, 0),
    );
    const handles = await Promise.all(
      Array.from({ length: 20 }, () =>
        spawnProcess({ command: ['sleep', '30'], grace: 0 }).then((h) => {
          resolved++;
          return h;
        }),
      ),
    );
    await timer;
    try {
      assert.ok(
        resolvedWhenTimerRan >= 0 && resolvedWhenTimerRan < handles.length,
        `the timer ran after ${resolvedWhenTimerRan} of ${handles.length} spawns`,
      );
    } finally {
      await Promise.all(handles.map((h) => h.kill()));
      await Promise.all(handles.map((h) => h.gone));
    }
  });

  test('argv is passed without a shell; env is merged; cwd is honoured', T, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'muster-kernel-'));
    try {
      const lines: string[] = [];
      const h = await spawnProcess({
        command: ['/bin/sh', '-c', 'echo "$1|$FOO|$PWD|${HOME:+home}"', 'x', 'a b; $c'],
        env: { FOO: 'bar' },
        cwd: dir,
        onLine: (_s, l) => lines.push(l),
      });
      await h.gone;
      assert.deepEqual(lines, [`a b; $c|bar|${dir}|home`]);
      const replaced: string[] = [];
      const h2 = await spawnProcess({
        command: ['/bin/sh', '-c', 'echo "${HOME:-nohome}"'],
        env: { PATH: '/usr/bin:/bin' },
        envReplace: true,
        onLine: (_s, l) => replaced.push(l),
      });
      await h2.gone;
      assert.deepEqual(replaced, ['nohome']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a line longer than the cap is cut; output never blocks the child', T, async () => {
    const { h, lines } = await sh(
      `head -c ${MAX_LINE_BYTES * 3} /dev/zero | tr '\\0' x; echo; head -c 4000000 /dev/zero | tr '\\0' '\\n'; echo end`,
    );
    const exit = await h.exited;
    assert.equal(exit.code, 0);
    await h.gone;
    const long = lines[0]!;
    assert.ok(long.startsWith('stdout:xxx') && long.endsWith('[truncated]'), long.slice(0, 40));
    assert.ok(long.length < MAX_LINE_BYTES + 50);
    assert.equal(lines.at(-1), 'stdout:end');
  });

  test('spawn failures are MUSTER_SPAWN_FAILED naming the command', T, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'muster-kernel-'));
    try {
      await assert.rejects(spawnProcess({ command: ['muster-no-such-program', '--x'] }), (err) => {
        assert.ok(isMusterError(err, 'MUSTER_SPAWN_FAILED'));
        assert.match(err.message, /muster-no-such-program --x/);
        assert.equal(err.details.errno, 'ENOENT');
        return true;
      });
      const script = join(dir, 'script.sh');
      writeFileSync(script, '#!/bin/sh\necho hi\n');
      chmodSync(script, 0o644);
      await assert.rejects(spawnProcess({ command: [script] }), (err) => {
        assert.ok(isMusterError(err, 'MUSTER_SPAWN_FAILED'));
        assert.equal(err.details.errno, 'EACCES');
        assert.match(err.message, /not executable/);
        return true;
      });
      await assert.rejects(spawnProcess({ command: ['true'], cwd: join(dir, 'missing') }), (err) => {
        assert.ok(isMusterError(err, 'MUSTER_SPAWN_FAILED'));
        assert.match(err.message, /working directory/);
        return true;
      });
      await assert.rejects(spawnProcess({ command: [] }), (err) =>
        isMusterError(err, 'MUSTER_INVALID_ARGUMENT'),
      );
      await assert.rejects(spawnProcess({ command: ['true'], grace: 'soon' }), (err) =>
        isMusterError(err, 'MUSTER_INVALID_ARGUMENT'),
      );
      await assert.rejects(
        spawnProcess({ command: ['true'], stopSignal: 'SIGNOPE' as NodeJS.Signals }),
        (err) => isMusterError(err, 'MUSTER_INVALID_ARGUMENT'),
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('readiness on fd 3: resolves on the first newline; rejects when it exits first', T, async () => {
    const { h } = await sh('printf "almost" >&3; sleep 0.05; echo " ready" >&3; exec sleep 1000', {
      readyFd: true,
    });
    await h.ready;
    assert.equal(h.state, 'running');
    await h.stop();
    const { h: never } = await sh('echo dying; exit 4', { readyFd: true });
    await assert.rejects(never.ready!, (err) => {
      assert.ok(isMusterError(err, 'MUSTER_SPAWN_FAILED'));
      assert.match(err.message, /exit status 4/);
      return true;
    });
    const { h: none } = await sh('exit 0');
    assert.equal(none.ready, undefined);
    await none.gone;
  });

  test('stop: SIGTERM, then SIGKILL after the grace when the child ignores SIGTERM', T, async () => {
    const { h, line } = await sh("trap 'echo got TERM' TERM; echo armed; while :; do sleep 0.01; done", {
      grace: 300,
    });
    await line(/armed/);
    const t0 = performance.now();
    const exit = await h.stop();
    const ms = performance.now() - t0;
    assert.equal(exit.signal, 'SIGKILL');
    assert.ok(ms >= 290 && ms < 5000, `stopped after ${ms} ms`);
    assert.equal(h.state, 'gone');
    assert.equal(isAlive(h.pid), false);
    await line(/got TERM/);
    // idempotent
    assert.deepEqual(await h.stop(), exit);
    assert.deepEqual(await h.kill(), exit);
    await h[Symbol.asyncDispose]();
  });

  test(
    'stop: a child that exits on SIGTERM is not SIGKILLed; a stopped (SIGSTOP) child still stops',
    T,
    async () => {
      const { h, line } = await sh('echo up; exec sleep 1000', { grace: 20_000 });
      await line(/up/);
      h.signal('SIGSTOP');
      const exit = await h.stop();
      assert.equal(exit.signal, 'SIGTERM');
    },
  );

  test('the group is killed with its grandchildren, even those ignoring SIGTERM', T, async () => {
    const { h, line } = await sh(
      "trap '' TERM; sleep 1000 & echo gc=$!; sh -c 'sleep 1000 & echo ggc=$!; wait' & wait",
      { grace: 200 },
    );
    const gc = Number((await line(/^gc=/)).slice(3));
    const ggc = Number((await line(/^ggc=/)).slice(4));
    assert.ok(isAlive(gc) && isAlive(ggc));
    await h.stop();
    assert.equal(isAlive(gc), false);
    assert.equal(isAlive(ggc), false);
  });

  test('a descendant that left the group (setsid) is found by its marker and killed', T, async () => {
    const { h, line } = await sh('setsid sleep 1000 & echo esc=$!; exec sleep 1000', { grace: 2000 });
    const esc = Number((await line(/^esc=/)).slice(4));
    await waitFor(() => readStat(esc)?.pgid === esc, { timeoutMs: 5000, what: 'setsid to run' });
    await h.stop();
    assert.equal(isAlive(esc), false, `the escapee is alive: ${JSON.stringify(readStat(esc))}`);
    // At least the escapee; setsid(1) forks when it finds itself a group leader, so a scan that runs
    // while it is mid-fork can count its short-lived parent as well.
    assert.ok(h.escaped >= 1, `escaped ${h.escaped}`);
  });

  test(
    'a stop with no grace (no first scan) still kills the escapee, found with a 100 KB environment',
    T,
    async () => {
      // The marker scan reads each environment into a 64 KiB buffer and reads a larger one whole.
      const big = 'x'.repeat(100 * 1024);
      const { h, line } = await sh('setsid sleep 1000 & echo esc=$!; exec sleep 1000', {
        grace: 0,
        env: { MUSTER_TEST_BIG: big },
      });
      const esc = Number((await line(/^esc=/)).slice(4));
      await waitFor(() => readStat(esc)?.pgid === esc, { timeoutMs: 5000, what: 'setsid to run' });
      const exit = await h.stop();
      assert.equal(isAlive(esc), false, `the escapee is alive: ${JSON.stringify(readStat(esc))}`);
      assert.ok(h.escaped >= 1, `escaped ${h.escaped}`);
      assert.ok(exit.signal === 'SIGTERM' || exit.signal === 'SIGKILL', `exit ${JSON.stringify(exit)}`);
    },
  );

  test('kill() is immediate and escalates a stop in progress', T, async () => {
    const { h, line } = await sh("trap '' TERM; echo armed; while :; do sleep 0.01; done", { grace: 60_000 });
    await line(/armed/);
    const stopping = h.stop();
    assert.equal(h.state, 'stopping');
    const t0 = performance.now();
    const exit = await h.kill();
    assert.equal(exit.signal, 'SIGKILL');
    assert.ok(performance.now() - t0 < 5000);
    assert.deepEqual(await stopping, exit);
  });

  test('a leader that exits leaves no orphans: its group gets the stop sequence', T, async () => {
    const { h, line } = await sh('sleep 1000 & echo gc=$!; exit 0', { grace: 5000 });
    const gc = Number((await line(/^gc=/)).slice(3));
    const exit = await h.exited;
    assert.equal(exit.code, 0);
    await h.gone;
    assert.equal(isAlive(gc), false);
  });

  test(
    'a parent that exits normally (process.exit) takes its children and grandchildren along',
    T,
    async () => {
      const kernel = new URL('../../src/process/index.js', import.meta.url).href;
      const script = `import { spawnProcess } from '${kernel}';
      const h = await spawnProcess({ command: ['/bin/sh', '-c', 'sleep 1000 & echo $!; exec sleep 1000'],
        onLine: (_s, line) => { process.stdout.write(JSON.stringify([h.pid, Number(line)]) + '\\n'); process.exit(0); } });`;
      let pids: number[] | undefined;
      const parent = await spawnProcess({
        command: [process.execPath, '--input-type=module', '-e', script],
        onLine: (stream, line) => {
          if (stream === 'stdout') pids = JSON.parse(line) as number[];
        },
      });
      const exit = await parent.exited;
      assert.equal(exit.code, 0, parent.tail().join('\n'));
      assert.equal(pids?.length, 2);
      await waitFor(() => pids!.every((pid) => !isAlive(pid)), {
        timeoutMs: 5000,
        what: 'the children to die',
      });
    },
  );

  test(
    'the wrapper runs nothing when its go-ahead pipe closes without a line (the parent died)',
    T,
    async () => {
      const dir = mkdtempSync(join(tmpdir(), 'muster-kernel-'));
      try {
        const flag = join(dir, 'ran');
        const child = spawn('/bin/sh', ['-c', WRAPPER, 'muster-spawn', 'touch', flag], {
          stdio: ['ignore', 'ignore', 'ignore', 'ignore', 'pipe'],
        });
        (child.stdio[4] as Writable).end(); // EOF, as when the parent dies before the go-ahead
        const [code] = (await once(child, 'exit')) as [number | null];
        assert.equal(code, 125);
        assert.equal(existsSync(flag), false);
        const ok = spawn('/bin/sh', ['-c', WRAPPER, 'muster-spawn', 'touch', flag], {
          stdio: ['ignore', 'ignore', 'ignore', 'ignore', 'pipe'],
        });
        (ok.stdio[4] as Writable).end('\n');
        const [okCode] = (await once(ok, 'exit')) as [number | null];
        assert.equal(okCode, 0);
        assert.equal(existsSync(flag), true);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  );

  test('IPC channel: send and receive messages with a Node child', T, async () => {
    const got: unknown[] = [];
    let onGot: () => void = () => undefined;
    const h = await spawnProcess({
      command: [process.execPath, '-e', "process.on('message', (m) => process.send({ echo: m }))"],
      ipc: 'json',
      onMessage: (m) => {
        got.push(m);
        onGot();
      },
    });
    await h.send({ hello: 1 });
    await new Promise<void>((resolve) => (onGot = resolve));
    assert.deepEqual(got, [{ echo: { hello: 1 } }]);
    await h.stop();
    await assert.rejects(h.send('late'), (err) => isMusterError(err, 'MUSTER_CLOSED'));
  });

  test(
    'IPC handle passing: a listening socket sent with a message is accepted on by the child',
    T,
    async () => {
      const server = createServer();
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      const port = (server.address() as { port: number }).port;
      let onGot: (m: unknown) => void = () => undefined;
      const got = new Promise<unknown>((resolve) => (onGot = resolve));
      const h = await spawnProcess({
        command: [
          process.execPath,
          '-e',
          "process.on('message', (m, s) => { s.on('connection', (c) => c.end('child ' + m.n + '\\n')); process.send({ listening: true }); })",
        ],
        ipc: 'advanced',
        onMessage: (m) => onGot(m),
      });
      try {
        await h.send({ n: 7 }, server);
        assert.deepEqual(await got, { listening: true });
        server.close(); // our copy stops accepting; the child's goes on
        const c = connect(port, '127.0.0.1');
        const chunks: Buffer[] = [];
        c.on('data', (b: Buffer) => chunks.push(b));
        await once(c, 'close');
        assert.equal(Buffer.concat(chunks).toString(), 'child 7\n');
      } finally {
        server.close();
        await h.stop();
      }
    },
  );
});
