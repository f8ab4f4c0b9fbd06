/** `etcdctl` (Debian's etcd-client, API v3) against `muster serve`: put, get, watch, leases, auth. */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';
import { type MusterServer, startServer } from '../../src/server/index.js';
import { needBinary } from '../../src/testing/index.js';

const run = promisify(execFile);
const TOKEN = 'etcdctl-token-0123456789';

describe(
  'etcdctl against muster serve',
  { skip: needBinary('etcdctl', 'apt-get install etcd-client') },
  () => {
    let dir: string;
    let server: MusterServer;
    let secured: MusterServer;
    const ctl = async (s: MusterServer, ...args: string[]): Promise<string> => {
      const { stdout } = await run(
        'etcdctl',
        [`--endpoints=${s.host}:${s.port}`, '--dial-timeout=3s', '--command-timeout=5s', ...args],
        { env: { ...process.env, ETCDCTL_API: '3' }, timeout: 15_000 },
      );
      return stdout;
    };
    before(async () => {
      dir = mkdtempSync(join(tmpdir(), 'muster-etcdctl-'));
      server = await startServer({ dataDir: join(dir, 'open'), listen: '127.0.0.1:0' });
      secured = await startServer({ dataDir: join(dir, 'secured'), listen: '127.0.0.1:0', token: TOKEN });
    });
    after(async () => {
      await server?.close();
      await secured?.close();
      rmSync(dir, { recursive: true, force: true });
    });

    test('put, get (prefix, json), delete, endpoint status', async () => {
      assert.equal((await ctl(server, 'put', '/ctl/a', 'one')).trim(), 'OK');
      await ctl(server, 'put', '/ctl/b', 'two');
      assert.equal(await ctl(server, 'get', '/ctl/', '--prefix'), '/ctl/a\none\n/ctl/b\ntwo\n');
      const json = JSON.parse(await ctl(server, 'get', '/ctl/a', '-w', 'json')) as {
        kvs: { key: string; version: number }[];
        header: { revision: number };
      };
      assert.equal(Buffer.from(json.kvs[0]?.key ?? '', 'base64').toString(), '/ctl/a');
      assert.equal(json.kvs[0]?.version, 1);
      assert.equal((await ctl(server, 'del', '/ctl/', '--prefix')).trim(), '2');
      assert.match(await ctl(server, 'endpoint', 'status'), /3\.4\.25/);
    });

    test('watch sees puts made by another etcdctl', async () => {
      const watcher = spawn(
        'etcdctl',
        [`--endpoints=${server.host}:${server.port}`, 'watch', '/ctlw/', '--prefix'],
        {
          env: { ...process.env, ETCDCTL_API: '3' },
        },
      );
      let out = '';
      watcher.stdout.on('data', (d: Buffer) => (out += d.toString()));
      try {
        // Put until the watcher reports (it may not be connected for the first puts).
        const deadline = Date.now() + 10_000;
        for (let i = 0; !out.includes('PUT') && Date.now() < deadline; i++) {
          await ctl(server, 'put', `/ctlw/${i}`, `v${i}`);
          await new Promise((r) => setTimeout(r, 100));
        }
        assert.match(out, /PUT\n\/ctlw\/\d+\nv\d+\n/);
      } finally {
        watcher.kill();
      }
    });

    test('lease grant, put with the lease, keep-alive, time to live, revoke', async () => {
      const granted = await ctl(server, 'lease', 'grant', '30');
      const id = /lease ([0-9a-f]+) granted/.exec(granted)?.[1];
      assert.ok(id, granted);
      await ctl(server, 'put', '/ctll/k', 'v', `--lease=${id}`);
      assert.match(await ctl(server, 'lease', 'keep-alive', '--once', id), /keepalived with TTL\(30\)/);
      assert.match(await ctl(server, 'lease', 'timetolive', id, '--keys'), /attached keys\(\[\/ctll\/k\]\)/);
      assert.match(await ctl(server, 'lease', 'revoke', id), /revoked/);
      assert.equal(await ctl(server, 'get', '/ctll/k'), '');
      await assert.rejects(ctl(server, 'lease', 'revoke', id), /requested lease not found/);
    });

    test('with a token: --user root:TOKEN works, a wrong password is refused', async () => {
      await ctl(secured, `--user=root:${TOKEN}`, 'put', '/sec', 'x');
      assert.equal(await ctl(secured, `--user=root:${TOKEN}`, 'get', '/sec', '--print-value-only'), 'x\n');
      await assert.rejects(ctl(secured, '--user=root:wrong', 'get', '/sec'), /authentication failed/);
      await assert.rejects(ctl(secured, 'get', '/sec'), /user name is empty/);
    });
  },
);
