/**
 * Spares (`prewarm`): a child forked ahead and held at the gate runs the next spawn's command, with
 * its environment and argv exactly as a forked child gets them; what it cannot take is forked as
 * usual; a discarded spare runs nothing. The death of the parent: test/process/parent-kill.test.ts.
 */
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, test } from 'node:test';
import { isAlive, type ProcessHandle, ProcessRegistry, spawnProcess } from '../../src/process/index.js';
import { discardSpare, prepareSpare, shellQuote, waitingSpares } from '../../src/process/spare.js';

const T = { timeout: 30_000 };

async function run(
  command: string[],
  extra: Partial<Parameters<typeof spawnProcess>[0]> = {},
): Promise<{ h: ProcessHandle; out: string[] }> {
  const out: string[] = [];
  const h = await spawnProcess({ command, prewarm: true, onLine: (_s, l) => out.push(l), ...extra });
  await h.gone;
  return { h, out };
}

describe('spares (prewarm)', () => {
  afterEach(() => discardSpare());

  test(
    'the next spawn runs in the spare: environment, argv and marker verbatim; registry record',
    T,
    async () => {
      await prepareSpare(false);
      const spare = waitingSpares()[0];
      assert.ok(spare !== undefined);
      const registry = new ProcessRegistry(mkdtempSync(join(tmpdir(), 'spare-reg-')));
      const tricky = `it's "$HOME" \`id\` $(echo no) \\ ; & | * ~ #`;
      let recorded = false;
      const out: string[] = [];
      const h = await spawnProcess({
        command: ['/bin/sh', '-c', 'printf "%s\\n" "$A" "$0" "$1" "$MUSTER_PROCESS" "$KEEP"', tricky, ''],
        env: { A: tricky, KEEP: 'x' },
        prewarm: true,
        registry,
        onLine: (_s, l) => {
          out.push(l);
          if (out.length === 1) recorded = registry.list().some((r) => r.pid === h.pid);
        },
      });
      assert.equal(h.pid, spare.pid, 'the spare became the child');
      assert.equal(h.startTime, spare.startTime);
      assert.equal(waitingSpares()[0], undefined, 'taken');
      await h.gone;
      assert.deepEqual(out, [tricky, tricky, '', spare.marker, 'x']);
      assert.equal(recorded, true, 'recorded in the registry before the command ran');
      assert.deepEqual(registry.list(), [], 'removed once gone');
      assert.deepEqual(await h.exited.then((e) => [e.code, e.signal]), [0, null]);
    },
  );

  test('what a spare cannot take is forked as usual, and the spare keeps waiting', T, async () => {
    await prepareSpare(false);
    const spare = waitingSpares()[0]!;
    const multiline = await run(['/bin/sh', '-c', 'printf "%s|" "$V"'], { env: { V: 'a\nb' } });
    assert.notEqual(multiline.h.pid, spare.pid);
    assert.deepEqual(multiline.out, ['a', 'b|']);
    const badName = await run(['/bin/sh', '-c', 'exit 0'], { env: { 'not-a-name': 'x' } });
    assert.notEqual(badName.h.pid, spare.pid);
    const replaced = await run(['/bin/sh', '-c', 'exit 0'], {
      env: { PATH: '/bin:/usr/bin' },
      envReplace: true,
    });
    assert.notEqual(replaced.h.pid, spare.pid);
    const otherCwd = await run(['/bin/sh', '-c', 'pwd'], { cwd: tmpdir() });
    assert.notEqual(otherCwd.h.pid, spare.pid);
    const readyShape = await run(['/bin/sh', '-c', 'echo >&3'], { readyFd: true });
    assert.notEqual(readyShape.h.pid, spare.pid);
    const argNewline = await run(['/bin/echo', 'a\nb']);
    assert.notEqual(argNewline.h.pid, spare.pid);
    assert.equal(waitingSpares()[0], spare, 'still waiting');
    assert.equal(isAlive(spare.pid, spare.startTime), true);
  });

  test('a readyFd spare: ready on fd 3; stop ends the group', T, async () => {
    await prepareSpare(true);
    const spare = waitingSpares()[0]!;
    assert.equal(spare.readyFd, true);
    const h = await spawnProcess({
      command: ['/bin/sh', '-c', 'echo >&3; exec sleep 100'],
      readyFd: true,
      prewarm: true,
    });
    assert.equal(h.pid, spare.pid);
    await h.ready;
    const exit = await h.stop({ grace: 0 });
    assert.ok(exit.signal === 'SIGTERM' || exit.signal === 'SIGKILL', `ended by ${String(exit.signal)}`);
    assert.equal(isAlive(spare.pid, spare.startTime), false);
  });

  test('a discarded spare is gone, killed at the gate', T, async () => {
    await prepareSpare(false);
    const spare = waitingSpares()[0]!;
    await discardSpare();
    assert.equal(waitingSpares()[0], undefined);
    assert.equal(isAlive(spare.pid, spare.startTime), false);
    assert.equal(spare.child.signalCode, 'SIGKILL');
  });

  test('shellQuote round-trips through sh', T, async () => {
    const s = `a'b"c$d\`e\\f g`;
    const { out } = await run(['/bin/sh', '-c', `printf '%s\\n' ${shellQuote(s)}`], { prewarm: false });
    assert.deepEqual(out, [s]);
  });
});
