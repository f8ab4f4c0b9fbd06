/** `muster config …` end to end, as separate CLI processes against an in-process `muster serve`. */
import assert from 'node:assert/strict';
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { openConfig, RelayClient } from '../../src/config/index.js';
import { type MusterServer, startServer } from '../../src/server/index.js';

const bin = new URL('../../../bin/muster.js', import.meta.url).pathname;
const run = promisify(execFile);

describe('muster config CLI', () => {
  let server: MusterServer;
  let dir: string;
  const muster = async (...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> => {
    try {
      const r = await run(process.execPath, [bin, ...args, '--store', server.url], {
        encoding: 'utf8',
        timeout: 60_000, // a command that hangs fails instead of stalling the suite
      });
      return { code: 0, stdout: r.stdout, stderr: r.stderr };
    } catch (err) {
      const e = err as { code: number; stdout: string; stderr: string };
      return { code: e.code, stdout: e.stdout, stderr: e.stderr };
    }
  };
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'muster-config-cli-'));
    server = await startServer({ dataDir: join(dir, 'data'), listen: '127.0.0.1:0' });
    writeFileSync(
      join(dir, 'schema.json'),
      JSON.stringify({ type: 'object', properties: { delay: { type: 'number' } }, required: ['delay'] }),
    );
    writeFileSync(join(dir, 'v1.json'), '{"delay": 1}');
    writeFileSync(join(dir, 'v2.json'), '{"delay": 5, "mood": true}');
    writeFileSync(join(dir, 'bad.json'), '{"delay": "slow"}');
  });
  after(async () => {
    await server?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('init, set, get, timeline, diff, cancel, and coded refusals', async () => {
    const f = (name: string): string => join(dir, name);
    assert.equal(
      (await muster('config', 'init', 'app', '--schema', f('schema.json'), '--max-staleness', '1s')).code,
      0,
    );
    const again = await muster('config', 'init', 'app');
    assert.equal(again.code, 1);
    assert.match(again.stderr, /^MUSTER_ALREADY_EXISTS: /);
    const soon = await muster('config', 'set', 'app', '--file', f('v1.json'), '--in', '1s');
    assert.equal(soon.code, 1);
    assert.match(soon.stderr, /^MUSTER_LEAD_TIME: .*earliest allowed instant is 20/);
    const bad = await muster('config', 'set', 'app', '--file', f('bad.json'), '--in', '5s');
    assert.match(bad.stderr, /^MUSTER_SCHEMA_VIOLATION: /);
    const missing = await muster('config', 'get', 'app', '--json');
    assert.equal(missing.code, 1);
    assert.equal(
      (JSON.parse(missing.stderr) as { error: { code: string } }).error.code,
      'MUSTER_MISSING_CONFIG',
    );
    const set1 = await muster(
      'config',
      'set',
      'app',
      '--file',
      f('v1.json'),
      '--at',
      new Date(Date.now() + 6000).toISOString(),
      '--json',
    );
    assert.equal(set1.code, 0, set1.stderr);
    const v1 = JSON.parse(set1.stdout) as { version: number; activateAt: number };
    const set2 = await muster(
      'config',
      'set',
      'app',
      '--file',
      f('v2.json'),
      '--in',
      '10m',
      '--note',
      'mood',
    );
    assert.match(set2.stdout, /scheduled 'app' version 2/);
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, v1.activateAt - Date.now() + 50)));
    const got = JSON.parse((await muster('config', 'get', 'app', '--json')).stdout) as {
      version: number;
      value: unknown;
      final: boolean;
    };
    assert.deepEqual([got.version, got.value, got.final], [1, { delay: 1 }, true]);
    const tl = await muster('config', 'timeline', 'app', '--once');
    assert.match(tl.stdout, /CURRENT/);
    assert.match(tl.stdout, /in 9m/);
    const diff = await muster('config', 'diff', 'app', '1', '2');
    assert.match(diff.stdout, /~ \$\.delay: 1 → 5/);
    assert.match(diff.stdout, /\+ \$\.mood: true/);
    assert.equal((await muster('config', 'cancel', 'app', '2')).code, 0);
    const late = await muster('config', 'cancel', 'app', '1');
    assert.match(late.stderr, /^MUSTER_LEAD_TIME: /);
    const unknown = await muster('config', 'get', 'nope');
    assert.match(unknown.stderr, /^MUSTER_NOT_FOUND: /);
  });

  test('config relay: serves processes with shared tables, refuses a second relay, takes over a dead one, cleans up', async () => {
    const nowhere = await muster('config', 'relay', '--listen', join(dir, 'no', 'such', 'dir', 'r.sock'));
    assert.equal(nowhere.code, 1);
    assert.match(nowhere.stderr, /^MUSTER_INVALID_ARGUMENT: cannot (listen on|create) .*directory exists/m);
    const badWait = await muster(
      'config',
      'relay',
      '--listen',
      join(dir, 'bad.sock'),
      '--max-staleness',
      'soon',
    );
    assert.match(badWait.stderr, /^MUSTER_INVALID_ARGUMENT: maxStaleness 'soon' is not a duration/m);
    assert.equal(existsSync(join(dir, 'bad.sock')), false, 'a refused relay left a socket behind');
    const f = (name: string): string => join(dir, name);
    assert.equal((await muster('config', 'init', 'relayed')).code, 0);
    assert.equal((await muster('config', 'set', 'relayed', '--file', f('v1.json'), '--in', '5s')).code, 0);
    const socket = join(dir, 'relay.sock');
    const startRelay = async (): Promise<{ child: ChildProcess; lines: AsyncIterator<string> }> => {
      const child = spawn(
        process.execPath,
        [bin, 'config', 'relay', '--listen', socket, '--json', '--store', server.url],
        { stdio: ['ignore', 'pipe', 'pipe'] },
      );
      const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream })[Symbol.asyncIterator]();
      return { child, lines };
    };
    const first = await startRelay();
    const listening = JSON.parse((await first.lines.next()).value as string) as {
      event: string;
      tables: string;
    };
    assert.equal(listening.event, 'listening');
    assert.equal(listening.tables, `${socket}.tables`);

    const client = await RelayClient.connect(socket);
    const h = openConfig(client, 'relayed');
    try {
      await h.ready();
      assert.equal(client.tables, listening.tables);
      assert.deepEqual(
        h.timeline().versions.map((v) => v.version),
        [1],
      );
    } finally {
      await h.close();
      await client.close();
    }

    const second = await muster('config', 'relay', '--listen', socket);
    assert.equal(second.code, 1);
    assert.match(second.stderr, /^MUSTER_ADDRESS_IN_USE: another relay is listening on /m);

    first.child.kill('SIGTERM');
    assert.equal(
      (JSON.parse((await first.lines.next()).value as string) as { event: string }).event,
      'closed',
    );
    const code = await new Promise<number | null>((resolve) => first.child.once('exit', (c) => resolve(c)));
    assert.equal(code, 0);
    assert.equal(existsSync(listening.tables), false, 'the relay left its tables behind');

    // A relay killed outright leaves its socket; the next one takes it over.
    const killed = await startRelay();
    await killed.lines.next();
    killed.child.kill('SIGKILL');
    await new Promise((resolve) => killed.child.once('exit', resolve));
    assert.equal(existsSync(socket), true);
    const next = await startRelay();
    assert.equal(
      (JSON.parse((await next.lines.next()).value as string) as { event: string }).event,
      'listening',
    );
    const again = await RelayClient.connect(socket); // served by the new relay, through its own table
    const h2 = openConfig(again, 'relayed');
    try {
      await h2.ready();
      assert.equal(again.tables, listening.tables);
      assert.deepEqual(
        h2.timeline().versions.map((v) => v.version),
        [1],
      );
      assert.equal(h2.state, 'fresh');
    } finally {
      await h2.close();
      await again.close();
    }
    next.child.kill('SIGTERM');
    await new Promise((resolve) => next.child.once('exit', resolve));
  });
});
