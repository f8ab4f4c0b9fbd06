/**
 * etcd's RBAC on `muster serve` through etcdctl (issue 13 §3): users, roles and key-range
 * permissions, `auth enable`, enforcement on reads, writes and watches, durability across a
 * restart, and crashes at the auth file's steps (MUSTER_CRASH_AT).
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, describe, test } from 'node:test';
import { type ClientDuplexStream, credentials, makeGenericClientConstructor, Metadata } from '@grpc/grpc-js';
import { Etcd3 } from 'etcd3';
import { etcdServices } from './etcd-proto.js';
import { startServer } from '../../src/server/index.js';
import { ETCD_INSTALL_HINT, needBinary, startEtcd } from '../../src/testing/index.js';

const bin = new URL('../../../bin/muster.js', import.meta.url).pathname;
const cleanups: (() => unknown)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'muster-rbac-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function etcdctl(endpoint: string, ...args: string[]): Promise<{ ok: boolean; out: string }> {
  try {
    const { stdout, stderr } = await promisify(execFile)('etcdctl', ['--endpoints', endpoint, ...args], {
      timeout: 30_000,
    });
    return { ok: true, out: stdout + stderr };
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string };
    return { ok: false, out: `${e.stdout ?? ''}${e.stderr ?? ''}` };
  }
}

async function must(endpoint: string, ...args: string[]): Promise<string> {
  const r = await etcdctl(endpoint, ...args);
  assert.ok(r.ok, `etcdctl ${args.join(' ')}: ${r.out}`);
  return r.out;
}

function serveProcess(
  dir: string,
  crashAt?: string,
): Promise<{ child: ChildProcess; address?: string; out: string }> {
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env.MUSTER_CRASH_AT;
  if (crashAt !== undefined) env.MUSTER_CRASH_AT = crashAt;
  const child = spawn(
    process.execPath,
    [bin, 'serve', '--data-dir', dir, '--listen', '127.0.0.1:0', '--log-level', 'warn'],
    { stdio: 'pipe', env },
  );
  cleanups.push(() => child.kill('SIGKILL'));
  let out = '';
  child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`muster serve did not start: ${out}`)), 20_000);
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /listening on etcd:\/\/([\d.]+:\d+)/.exec(out);
      if (m !== null) {
        clearTimeout(timer);
        resolve({ child, address: m[1] as string, out });
      }
    });
    child.once('exit', () => {
      clearTimeout(timer);
      resolve({ child, out });
    });
  });
}

describe('RBAC with etcdctl', { skip: needBinary('etcdctl', ETCD_INSTALL_HINT) }, () => {
  test(
    'users, roles, permissions; auth enable; enforced on get/put/del/watch; durable; disable',
    { timeout: 90_000 },
    async () => {
      const dir = tempDir();
      let server = await startServer({ dataDir: dir, listen: '127.0.0.1:0' });
      let ep = `${server.host}:${server.port}`;
      await must(ep, 'user', 'add', 'root:rootpw');
      await must(ep, 'user', 'grant-role', 'root', 'root');
      await must(ep, 'role', 'add', 'reader');
      await must(ep, 'role', 'grant-permission', 'reader', 'read', '/r/', '--prefix=true');
      await must(ep, 'role', 'add', 'writer');
      await must(ep, 'role', 'grant-permission', 'writer', 'readwrite', '/w/a');
      await must(ep, 'user', 'add', 'alice:alicepw');
      await must(ep, 'user', 'grant-role', 'alice', 'reader');
      await must(ep, 'user', 'grant-role', 'alice', 'writer');
      assert.match(await must(ep, 'role', 'get', 'reader'), /\[\/r\/, \/r0\) \(prefix \/r\/\)/);
      assert.match(await must(ep, 'user', 'get', 'alice'), /Roles: reader writer/);
      await must(ep, 'put', '/r/a', 'v1');
      assert.match(
        (await etcdctl(ep, 'user', 'revoke-role', 'alice', 'nope')).out,
        /role is not granted to the user/,
      );
      assert.match((await etcdctl(ep, 'user', 'add', 'alice:x')).out, /user name already exists/);
      await must(ep, 'auth', 'enable');

      const alice = ['--user', 'alice:alicepw'];
      const root = ['--user', 'root:rootpw'];
      assert.match(await must(ep, ...alice, 'get', '/r/a', '--print-value-only'), /v1/);
      assert.match(await must(ep, ...alice, 'get', '/r/', '--prefix', '--print-value-only'), /v1/);
      assert.match((await etcdctl(ep, ...alice, 'put', '/r/a', 'no')).out, /permission denied/);
      assert.match((await etcdctl(ep, ...alice, 'get', '/other')).out, /permission denied/);
      assert.match((await etcdctl(ep, ...alice, 'get', '', '--prefix')).out, /permission denied/);
      await must(ep, ...alice, 'put', '/w/a', 'mine');
      assert.match((await etcdctl(ep, ...alice, 'del', '/w/', '--prefix')).out, /permission denied/);
      assert.match((await etcdctl(ep, ...alice, 'user', 'list')).out, /permission denied/);
      assert.match((await etcdctl(ep, 'get', '/r/a')).out, /user name is empty/);
      assert.match((await etcdctl(ep, '--user', 'alice:wrong', 'get', '/r/a')).out, /authentication failed/);
      assert.match(await must(ep, ...root, 'user', 'list'), /alice\s+root/);
      assert.match((await etcdctl(ep, ...root, 'user', 'delete', 'root')).out, /invalid auth management/);
      // Watches need read permission too: etcd answers created + canceled with the reason.
      const c = new Etcd3({ hosts: ep });
      try {
        const token = (await c.auth.authenticate({ name: 'alice', password: 'alicepw' })).token;
        const md = new Metadata();
        md.set('token', token);
        const Client = makeGenericClientConstructor(etcdServices().Watch, 'Watch');
        const raw = new Client(ep, credentials.createInsecure());
        const stream = (
          raw as unknown as { Watch(m: Metadata): ClientDuplexStream<unknown, Record<string, unknown>> }
        ).Watch(md);
        stream.on('error', () => undefined);
        const answers: Record<string, unknown>[] = [];
        const two = new Promise<void>((resolve) =>
          stream.on('data', (r: Record<string, unknown>) => {
            answers.push(r);
            if (answers.length === 2) resolve();
          }),
        );
        stream.write({ create_request: { key: Buffer.from('/other') } });
        stream.write({ create_request: { key: Buffer.from('/r/'), range_end: Buffer.from('/r0') } });
        await two;
        stream.end();
        raw.close();
        assert.equal(answers[0]?.canceled, true);
        assert.match(String(answers[0]?.cancel_reason), /permission denied/);
        assert.equal(answers[1]?.canceled, false);
      } finally {
        c.close();
      }
      await server.close();

      // Durable: after a restart, auth is still on and the same users work.
      server = await startServer({ dataDir: dir, listen: '127.0.0.1:0' });
      ep = `${server.host}:${server.port}`;
      assert.match((await etcdctl(ep, 'get', '/r/a')).out, /user name is empty/);
      assert.match(await must(ep, ...alice, 'get', '/w/a', '--print-value-only'), /mine/);
      await must(ep, ...root, 'role', 'revoke-permission', 'writer', '/w/a');
      assert.match((await etcdctl(ep, ...alice, 'get', '/w/a')).out, /permission denied/);
      await must(ep, ...root, 'auth', 'disable');
      assert.match(await must(ep, 'get', '/w/a', '--print-value-only'), /mine/);
      await server.close();
    },
  );

  test(
    'crash points of the auth file: before the rename the change is lost, after it is kept',
    { timeout: 90_000 },
    async () => {
      for (const [point, kept] of [
        ['auth.tmp-synced', false],
        ['auth.renamed', true],
      ] as const) {
        const dir = tempDir();
        const s = await serveProcess(dir, point);
        assert.ok(s.address, s.out);
        const gone = new Promise((r) => (s.child.exitCode !== null ? r(null) : s.child.once('exit', r)));
        await etcdctl(s.address, 'user', 'add', 'bob:bobpw');
        await gone;
        assert.equal(s.child.signalCode, 'SIGKILL', `${point}: ${s.out}`);
        const next = await serveProcess(dir);
        const list = await must(next.address as string, 'user', 'list');
        assert.equal(/bob/.test(list), kept, `${point}: ${list}`);
        next.child.kill('SIGTERM');
        await new Promise((r) => next.child.once('exit', r));
      }
    },
  );

  /**
   * etcd's `checkLeasePuts`: revoking a lease deletes its keys, so LeaseRevoke needs write
   * permission on every key attached to it, and a Put may not attach a key to such a lease.
   * The same etcdctl steps against muster serve and a real etcd must answer alike.
   */
  test(
    'lease revoke (and put --lease) need write permission on every key of the lease, as in etcd',
    { timeout: 120_000, skip: needBinary('etcd', ETCD_INSTALL_HINT) },
    async () => {
      const scenario = async (ep: string): Promise<string[]> => {
        const outcome = (r: { ok: boolean; out: string }): string =>
          r.ok ? 'ok' : /permission denied/.test(r.out) ? 'permission denied' : `failed: ${r.out.trim()}`;
        const root = ['--user', 'root:rootpw'];
        const bob = ['--user', 'bob:bobpw'];
        await must(ep, 'user', 'add', 'root:rootpw');
        await must(ep, 'user', 'grant-role', 'root', 'root');
        await must(ep, 'role', 'add', 'mine');
        await must(ep, 'role', 'grant-permission', 'mine', 'readwrite', '/l/', '--prefix=true');
        await must(ep, 'user', 'add', 'bob:bobpw');
        await must(ep, 'user', 'grant-role', 'bob', 'mine');
        await must(ep, 'auth', 'enable');
        const grant = async (): Promise<string> => {
          const m = /lease ([0-9a-f]+) granted/.exec(await must(ep, ...root, 'lease', 'grant', '60'));
          assert.ok(m, 'a lease id');
          return m[1] as string;
        };
        const foreign = await grant(); // carries a key bob may not write
        await must(ep, ...root, 'put', '--lease', foreign, '/x/theirs', 'v');
        const own = await grant(); // carries only bob's keys
        const steps = [
          outcome(await etcdctl(ep, ...bob, 'put', '--lease', own, '/l/a', 'v')),
          outcome(await etcdctl(ep, ...bob, 'lease', 'revoke', foreign)),
          outcome(await etcdctl(ep, ...bob, 'put', '--lease', foreign, '/l/b', 'v')),
          outcome(await etcdctl(ep, ...bob, 'lease', 'revoke', own)),
          outcome(await etcdctl(ep, ...root, 'get', '/l/a', '--print-value-only')),
          outcome(await etcdctl(ep, ...root, 'get', '/x/theirs', '--print-value-only')),
          outcome(await etcdctl(ep, ...root, 'lease', 'revoke', foreign)),
        ];
        steps.push((await must(ep, ...root, 'get', '/', '--prefix', '--keys-only')).trim());
        return steps;
      };
      const dir = tempDir();
      const [server, cluster] = await Promise.all([
        startServer({ dataDir: dir, listen: '127.0.0.1:0' }),
        startEtcd(),
      ]);
      try {
        const etcd = await scenario(cluster.endpoints[0] as string);
        const mine = await scenario(`${server.host}:${server.port}`);
        assert.deepEqual(
          etcd,
          ['ok', 'permission denied', 'permission denied', 'ok', 'ok', 'ok', 'ok', ''],
          'etcd',
        );
        assert.deepEqual(mine, etcd);
      } finally {
        await server.close();
        await cluster.close();
      }
    },
  );
});
