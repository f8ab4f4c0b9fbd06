import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { isMusterError, MusterError } from '../../src/errors.js';
import {
  type EtcdStore,
  fromEtcdError,
  openEtcdStore,
  progressModeFor,
  resolveEtcdOptions,
} from '../../src/store/etcd/index.js';
import {
  ETCD_INSTALL_HINT,
  type EtcdCluster,
  needBinary,
  startEtcd,
  startFaultProxy,
  waitFor,
} from '../../src/testing/index.js';
import { checkOrder, readUntil, text, uniquePrefix } from './etcd-helpers.js';

describe('etcd URLs and options', () => {
  test('parses several endpoints, credentials and a key prefix', () => {
    const o = resolveEtcdOptions(
      'etcd://alice:s%3Acret@127.0.0.1:2379,127.0.0.2,[::1]:2380/?prefix=/muster/',
      { env: {} },
    );
    assert.deepEqual(o.endpoints, ['127.0.0.1:2379', '127.0.0.2:2379', '[::1]:2380']);
    assert.deepEqual(o.auth, { username: 'alice', password: 's:cret' });
    assert.equal(o.keyPrefix, '/muster/');
    assert.equal(o.tls, false);
    assert.equal(o.redactedUrl, 'etcd://alice:***@127.0.0.1:2379,127.0.0.2,[::1]:2380/?prefix=/muster/');
  });

  test('connectTimeout: 2 s by default, a duration otherwise', () => {
    assert.equal(resolveEtcdOptions('etcd://h:1', { env: {} }).connectTimeoutMs, 2000);
    assert.equal(
      resolveEtcdOptions('etcd://h:1', { env: {}, connectTimeout: '300ms' }).connectTimeoutMs,
      300,
    );
    assert.throws(() => resolveEtcdOptions('etcd://h:1', { env: {}, connectTimeout: 'soon' }), {
      code: 'MUSTER_INVALID_ARGUMENT',
    });
  });

  test('options win over the URL, the URL over the environment', () => {
    const env = { MUSTER_ETCD_USERNAME: 'env', MUSTER_ETCD_PASSWORD: 'envpw', MUSTER_ETCD_PREFIX: '/env/' };
    assert.deepEqual(resolveEtcdOptions('etcd://h:1', { env }).auth, { username: 'env', password: 'envpw' });
    assert.equal(resolveEtcdOptions('etcd://h:1/?prefix=/url/', { env }).keyPrefix, '/url/');
    assert.equal(
      resolveEtcdOptions('etcd://h:1/?prefix=/url/', { env, keyPrefix: '/opt/' }).keyPrefix,
      '/opt/',
    );
  });

  test('etcds:// takes PEM contents; plain URLs refuse TLS files', () => {
    const o = resolveEtcdOptions('etcds://h:2379', { ca: 'CA', cert: 'CERT', key: 'KEY', env: {} });
    assert.equal(o.tls, true);
    assert.equal(o.ca?.toString(), 'CA');
    assert.throws(() => resolveEtcdOptions('etcd://h:2379', { ca: 'CA', env: {} }), {
      code: 'MUSTER_INVALID_ARGUMENT',
    });
    assert.throws(() => resolveEtcdOptions('etcds://h:2379', { cert: 'C', env: {} }), {
      code: 'MUSTER_INVALID_ARGUMENT',
    });
    assert.throws(() => resolveEtcdOptions('etcds://h', { caFile: '/nonexistent/ca.pem', env: {} }), {
      code: 'MUSTER_INVALID_ARGUMENT',
    });
  });

  test('rejects what is not an etcd URL', () => {
    for (const url of ['memory:', 'etcd://', 'http://h:2379', 'etcd:h']) {
      assert.throws(() => resolveEtcdOptions(url, { env: {} }), { code: 'MUSTER_UNSUPPORTED_URL' }, url);
    }
  });
});

describe('fromEtcdError', () => {
  const cases: [string, string, boolean][] = [
    ['etcdserver: mvcc: required revision has been compacted', 'MUSTER_COMPACTED', false],
    ['etcdserver: mvcc: required revision is a future revision', 'MUSTER_FUTURE_REVISION', false],
    ['etcdserver: requested lease not found', 'MUSTER_LEASE_NOT_FOUND', false],
    ['etcdserver: permission denied', 'MUSTER_PERMISSION_DENIED', false],
    ['etcdserver: request is too large', 'MUSTER_VALUE_TOO_LARGE', false],
    ['etcdserver: too many operations in txn request', 'MUSTER_TXN_TOO_LARGE', false],
    ['etcdserver: duplicate key given in txn request', 'MUSTER_INVALID_ARGUMENT', false],
    ['etcdserver: no leader', 'MUSTER_UNAVAILABLE', true],
    ['etcdserver: invalid auth token', 'MUSTER_UNAVAILABLE', true],
    ['etcdserver: authentication failed, invalid user ID or password', 'MUSTER_PERMISSION_DENIED', false],
    ['etcdserver: mvcc: database space exceeded', 'MUSTER_UNAVAILABLE', false],
    ['etcdserver: request timed out', 'MUSTER_UNAVAILABLE', true],
    ['14 UNAVAILABLE: No connection established', 'MUSTER_UNAVAILABLE', true],
    ['4 DEADLINE_EXCEEDED: Deadline exceeded', 'MUSTER_TIMEOUT', true],
    ['16 UNAUTHENTICATED: bad', 'MUSTER_PERMISSION_DENIED', false],
    ['something else', 'MUSTER_INTERNAL', false],
  ];
  for (const [message, code, retryable] of cases) {
    test(`${message} → ${code}`, () => {
      const err = fromEtcdError(new Error(message), { key: 'k' });
      assert.equal(err.code, code);
      assert.equal(err.retryable, retryable);
      assert.equal(err.details.key, 'k');
    });
  }
  test('passes MusterErrors through', () => {
    const e = new MusterError('MUSTER_ABORTED', 'x');
    assert.equal(fromEtcdError(e), e);
  });
  test('progress requests are used only on servers with the etcd#15220 fix', () => {
    assert.equal(progressModeFor('3.4.23'), 'periodic');
    assert.equal(progressModeFor('3.4.25'), 'request');
    assert.equal(progressModeFor('3.5.7'), 'periodic');
    assert.equal(progressModeFor('3.5.8'), 'request');
    assert.equal(progressModeFor('3.6.0'), 'request');
  });
});

describe('etcd engine on a single member', { skip: needBinary('etcd', ETCD_INSTALL_HINT) }, () => {
  let cluster: EtcdCluster;
  let store: EtcdStore;
  before(async () => {
    cluster = await startEtcd();
    store = openEtcdStore(cluster.url, { keyPrefix: uniquePrefix('engine') });
  });
  after(async () => {
    await store?.close();
    await cluster?.close();
  });

  test('keys live under the key prefix and come back without it', async () => {
    const other = openEtcdStore(cluster.url);
    try {
      await store.put('a', 'one');
      const raw = await other.range(store.keyPrefix);
      assert.deepEqual(
        raw.kvs.map((kv) => kv.key),
        [`${store.keyPrefix}a`],
      );
      assert.equal((await store.range('')).kvs[0]?.key, 'a');
    } finally {
      await other.close();
    }
  });

  test('grantLease returns the TTL etcd granted; keepAlive of a gone lease is LEASE_NOT_FOUND', async () => {
    const grant = await store.grantLease(1);
    const info = await store.leaseTimeToLive(grant.id);
    assert.equal(info?.grantedTtlSeconds, grant.ttlSeconds);
    assert.ok(grant.ttlSeconds >= 1);
    assert.equal(await store.keepAlive(grant.id), grant.ttlSeconds);
    await store.put('leased', 'v', { lease: grant.id });
    assert.deepEqual((await store.leaseTimeToLive(grant.id))?.keys, ['leased']);
    await store.revokeLease(grant.id);
    assert.equal(await store.get('leased'), undefined);
    assert.equal(await store.leaseTimeToLive(grant.id), undefined);
    await assert.rejects(store.keepAlive(grant.id), { code: 'MUSTER_LEASE_NOT_FOUND' });
    await assert.rejects(store.revokeLease(grant.id), { code: 'MUSTER_LEASE_NOT_FOUND' });
    await assert.rejects(store.put('x', 'y', { lease: grant.id }), { code: 'MUSTER_LEASE_NOT_FOUND' });
  });

  test('requestProgress yields a progress batch covering the head at request time', async () => {
    const w = store.watch('quiet/');
    await store.put('elsewhere', 'x');
    const head = await store.headRevision();
    w.requestProgress();
    const { batches } = await readUntil(w, (_, b) => b.type === 'progress');
    w.close();
    const last = batches[batches.length - 1];
    assert.equal(last?.type, 'progress');
    assert.ok((last?.revision ?? 0) >= head, `progress ${last?.revision} < head ${head}`);
  });

  test('aborts and closes', async () => {
    const ac = new AbortController();
    ac.abort();
    await assert.rejects(store.get('a', { signal: ac.signal }), { code: 'MUSTER_ABORTED' });
    const ac2 = new AbortController();
    const w = store.watch('aborted/', { signal: ac2.signal });
    const next = w[Symbol.asyncIterator]().next();
    ac2.abort();
    assert.deepEqual(await next, { value: undefined, done: true });

    const s = openEtcdStore(cluster.url);
    await s.put('closing', 'x');
    const w2 = s.watch('closing');
    await Promise.all([s.close(), s.close()]);
    await s.close();
    await assert.rejects(s.get('closing'), { code: 'MUSTER_CLOSED' });
    await assert.rejects(w2[Symbol.asyncIterator]().next(), { code: 'MUSTER_CLOSED' });
  });

  test('an unreachable endpoint fails fast and retryably', async () => {
    const s = openEtcdStore('etcd://127.0.0.1:1', { requestTimeout: '1s' });
    try {
      const err = await s.get('k').then(
        () => undefined,
        (e: unknown) => e,
      );
      assert.ok(
        isMusterError(err, 'MUSTER_UNAVAILABLE') || isMusterError(err, 'MUSTER_TIMEOUT'),
        String(err),
      );
      assert.equal(err.retryable, true);
    } finally {
      await s.close();
    }
  });

  test('a watch survives cut connections with no gap and no duplicate', async () => {
    const proxy = await startFaultProxy({ target: cluster.endpoints[0] as string });
    const watcherStore = openEtcdStore(`etcd://${proxy.endpoint}`, { keyPrefix: store.keyPrefix });
    try {
      const from = (await store.headRevision()) + 1;
      const w = watcherStore.watch('cut/', { fromRevision: from });
      const total = 200;
      const writes = (async () => {
        for (let i = 0; i < total; i++) {
          await store.put(`cut/${i % 7}`, String(i));
          if (i % 25 === 10) proxy.cutAll();
        }
      })();
      const { events, batches } = await readUntil(w, (ev) => ev.length >= total, 20_000);
      await writes;
      w.close();
      checkOrder(batches);
      assert.deepEqual(
        events.map((e) => text(e.kv.value)),
        Array.from({ length: total }, (_, i) => String(i)),
      );
    } finally {
      await watcherStore.close();
      await proxy.close();
    }
  });

  test('a watcher whose resume point was compacted gets MUSTER_COMPACTED, re-lists and continues', async () => {
    const proxy = await startFaultProxy({ target: cluster.endpoints[0] as string });
    const watcherStore = openEtcdStore(`etcd://${proxy.endpoint}`, { keyPrefix: store.keyPrefix });
    try {
      await store.put('compact/a', '0');
      const listed = await watcherStore.range('compact/');
      const w = watcherStore.watch('compact/', { fromRevision: listed.revision + 1 });
      await store.put('compact/a', '1');
      const first = await readUntil(w, (ev) => ev.length >= 1);
      assert.equal(text(first.events[0]!.kv.value), '1');

      // The watcher loses its connection; meanwhile history moves on and is compacted.
      proxy.blackhole();
      proxy.cutAll();
      for (let i = 2; i <= 5; i++) await store.put('compact/a', String(i));
      const compactedAt = await store.headRevision();
      await store.compact(compactedAt);
      await assert.rejects(store.get('compact/a', { revision: compactedAt - 1 }), (e: unknown) => {
        assert.ok(isMusterError(e, 'MUSTER_COMPACTED'));
        assert.equal(e.details.compactRevision, compactedAt);
        assert.equal(e.details.revision, compactedAt - 1);
        return true;
      });
      proxy.pass();
      proxy.cutAll();

      const err = await readUntil(w, () => false, 15_000).then(
        () => undefined,
        (e: unknown) => e,
      );
      assert.ok(isMusterError(err, 'MUSTER_COMPACTED'), String(err));
      assert.ok((err.details.compactRevision ?? 0) > first.events[0]!.kv.modRevision);

      // Re-list, then watch from the list's revision + 1: nothing is missed.
      const again = await watcherStore.range('compact/');
      assert.equal(text(again.kvs[0]!.value), '5');
      const w2 = watcherStore.watch('compact/', { fromRevision: again.revision + 1 });
      await store.put('compact/a', '6');
      const next = await readUntil(w2, (ev) => ev.length >= 1);
      w2.close();
      assert.equal(text(next.events[0]!.kv.value), '6');
    } finally {
      await watcherStore.close();
      await proxy.close();
    }
  });

  test('a watch on a silent connection is given up by gRPC keep-alive and resumes when the path heals', async () => {
    const proxy = await startFaultProxy({ target: cluster.endpoints[0] as string });
    const watcherStore = openEtcdStore(`etcd://${proxy.endpoint}`, { keyPrefix: store.keyPrefix });
    try {
      const w = watcherStore.watch('hole/', { fromRevision: (await store.headRevision()) + 1 });
      await store.put('hole/k', '0');
      await readUntil(w, (ev) => ev.length >= 1);
      const dialed = proxy.accepted;
      // The path goes silent (bytes are held, as TCP would keep retransmitting them); no reset
      // reaches the client: only its keep-alive pings can tell the connection is dead.
      proxy.pause();
      for (let i = 1; i <= 5; i++) await store.put('hole/k', String(i));
      await waitFor(() => proxy.accepted > dialed, { timeoutMs: 20_000, what: 'the client re-dialing' });
      proxy.pass();
      const { events, batches } = await readUntil(w, (ev) => ev.length >= 5, 20_000);
      w.close();
      checkOrder(batches);
      assert.deepEqual(
        events.map((e) => text(e.kv.value)),
        ['1', '2', '3', '4', '5'],
      );
    } finally {
      await watcherStore.close();
      await proxy.close();
    }
  });

  test('closing one watch leaves the member connection, and every other stream on it, alone', async () => {
    const proxy = await startFaultProxy({ target: cluster.endpoints[0] as string });
    const s = openEtcdStore(`etcd://${proxy.endpoint}`, { keyPrefix: store.keyPrefix });
    try {
      const from = (await s.headRevision()) + 1;
      const kept = s.watch('calm/', { fromRevision: from });
      for (let i = 0; i < 5; i++) {
        const w = s.watch('brief/', { fromRevision: from });
        await s.put('brief/k', String(i));
        await readUntil(w, (ev) => ev.length >= 1);
        w.close();
      }
      const lease = await s.grantLease(5);
      await s.keepAlive(lease.id);
      await s.put('calm/k', 'still here');
      const { events } = await readUntil(kept, (ev) => ev.length >= 1);
      kept.close();
      assert.equal(text(events[0]!.kv.value), 'still here');
      assert.equal(proxy.accepted, 1, 'one connection served every request and stream');
    } finally {
      await s.close();
      await proxy.close();
    }
  });
});
