/** The etcd engine with etcd's username/password authentication and role-based permissions. */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import { openEtcdStore } from '../../src/store/etcd/index.js';
import { ETCD_INSTALL_HINT, type EtcdCluster, needBinary, startEtcd } from '../../src/testing/index.js';
import { readUntil, text } from './etcd-helpers.js';

const skip = needBinary('etcd', ETCD_INSTALL_HINT) || needBinary('etcdctl', 'apt-get install etcd-client');

describe('etcd engine with authentication', { skip }, () => {
  let cluster: EtcdCluster;
  const ctl = (...args: string[]): string =>
    execFileSync('etcdctl', [`--endpoints=${cluster.endpoints.join(',')}`, ...args], {
      env: { ...process.env, ETCDCTL_API: '3' },
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    });

  before(async () => {
    cluster = await startEtcd();
    ctl('user', 'add', 'root', '--new-user-password=rootpw');
    ctl('user', 'grant-role', 'root', 'root');
    ctl('user', 'add', 'alice', '--new-user-password=s:cret pw');
    ctl('role', 'add', 'muster');
    ctl('role', 'grant-permission', 'muster', '--prefix=true', 'readwrite', '/allowed/');
    ctl('user', 'grant-role', 'alice', 'muster');
    ctl('auth', 'enable');
  });
  after(async () => {
    await cluster?.close();
  });

  test('a user with a role reads, writes and watches its prefix, and nothing else', async () => {
    const url = `etcd://alice:${encodeURIComponent('s:cret pw')}@${cluster.endpoints[0]}/?prefix=/allowed/`;
    const store = openEtcdStore(url);
    try {
      assert.equal(store.url.includes('s:cret'), false, 'the password is not in the store URL');
      const w = store.watch('k', { fromRevision: (await store.headRevision()) + 1 });
      await store.put('k', 'v');
      assert.equal(text((await store.get('k'))!.value), 'v');
      const { events } = await readUntil(w, (ev) => ev.length >= 1);
      w.close();
      assert.equal(events[0]?.kv.key, 'k');

      const outside = openEtcdStore(url.replace('/?prefix=/allowed/', '/?prefix=/other/'));
      try {
        await assert.rejects(outside.put('k', 'v'), { code: 'MUSTER_PERMISSION_DENIED' });
        await assert.rejects(outside.get('k'), { code: 'MUSTER_PERMISSION_DENIED' });
      } finally {
        await outside.close();
      }
    } finally {
      await store.close();
    }
  });

  test('a wrong password or no credentials are refused with MUSTER_PERMISSION_DENIED', async () => {
    for (const options of [{ username: 'alice', password: 'wrong' }, {}]) {
      const store = openEtcdStore(`etcd://${cluster.endpoints[0]}`, { ...options, env: {} });
      try {
        await assert.rejects(store.get('/allowed/k'), { code: 'MUSTER_PERMISSION_DENIED' });
      } finally {
        await store.close();
      }
    }
  });
});
