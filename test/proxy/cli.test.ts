import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { openStore, type Store } from '../../src/store/index.js';
import { startTempServe, type TempServe } from '../../src/testing/index.js';

const BIN = fileURLToPath(new URL('../../../bin/muster.js', import.meta.url));

function muster(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

describe('muster route / drain / proxy (CLI)', { timeout: 60_000 }, () => {
  let serve: TempServe;
  let store: Store;
  before(async () => {
    serve = await startTempServe();
    store = await openStore(serve.url);
    await store.put('/muster/services/chat/spec', JSON.stringify({ partitions: 1 }));
    await store.put(
      '/muster/services/chat/instances/i1',
      JSON.stringify({ id: 'i1', address: '127.0.0.1:9' }),
    );
  });
  after(async () => {
    await store.close();
    await serve.close();
  });

  test('route pin, show (why: pin, or partition owner with its token), unpin', async () => {
    const s = ['--service', 'chat', '--store', serve.url];
    assert.equal((await muster(['route', 'pin', 'realm1', 'i1', ...s])).code, 0);
    const pinned = JSON.parse((await muster(['route', 'show', 'realm1', ...s, '--json'])).stdout) as Record<
      string,
      unknown
    >;
    assert.equal(pinned['via'], 'route');
    assert.equal(pinned['instance'], 'i1');
    assert.equal(pinned['origin'], 'http://127.0.0.1:9');
    assert.equal((await muster(['route', 'unpin', 'realm1', ...s])).code, 0);
    const again = await muster(['route', 'unpin', 'realm1', ...s]);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /MUSTER_NOT_FOUND/);
    const put = await store.put(
      '/muster/services/chat/owners/0',
      JSON.stringify({ instance: 'i1', since: '' }),
    );
    const owned = await muster(['route', 'show', 'realm1', ...s]);
    assert.equal(owned.code, 0);
    assert.match(owned.stdout, new RegExp(`partition 0 owned by i1 \\(fencing token ${put.revision}\\)`));
    const bad = await muster(['route', 'pin', 'a/b', 'i1', ...s]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /MUSTER_INVALID_ARGUMENT/);
  });

  test('drain writes the drain key, --undo deletes it; an unknown one is MUSTER_NOT_FOUND', async () => {
    const s = ['--service', 'chat', '--store', serve.url];
    assert.equal((await muster(['drain', 'i1', ...s])).code, 0);
    const kv = await store.get('/muster/services/chat/drain/i1');
    assert.equal(
      (JSON.parse(Buffer.from(kv?.value ?? []).toString()) as { instance: string }).instance,
      'i1',
    );
    assert.equal((await muster(['drain', 'i1', '--undo', ...s])).code, 0);
    assert.equal(await store.get('/muster/services/chat/drain/i1'), undefined);
    const none = await muster(['drain', 'nobody', ...s]);
    assert.equal(none.code, 1);
    assert.match(none.stderr, /MUSTER_NOT_FOUND/);
  });

  test('muster proxy with a bad configuration file exits 1 naming file, line and field', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'muster-proxy-cli-'));
    const file = join(dir, 'proxy.yaml');
    writeFileSync(file, 'service: chat\nlisten: 127.0.0.1:0\nkey: host\nworkers: many\n');
    const r = await muster(['proxy', '--config', file, '--store', serve.url]);
    assert.equal(r.code, 1);
    assert.ok(r.stderr.includes(`MUSTER_INVALID_ARGUMENT: ${file}:4: workers:`), r.stderr);
  });
});
