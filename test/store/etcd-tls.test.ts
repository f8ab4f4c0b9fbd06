/** The etcd engine over TLS (`etcds://`), with a client certificate (mutual TLS). */
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { isMusterError } from '../../src/errors.js';
import { openStore } from '../../src/store/index.js';
import {
  ETCD_INSTALL_HINT,
  type EtcdCluster,
  makeTestCertificates,
  needBinary,
  startEtcd,
  type TestCertificates,
} from '../../src/testing/index.js';
import { readUntil, text } from './etcd-helpers.js';

const skip = needBinary('etcd', ETCD_INSTALL_HINT) || needBinary('openssl', 'apt-get install openssl');

describe('etcd engine over TLS', { skip }, () => {
  let certs: TestCertificates;
  let cluster: EtcdCluster;
  before(async () => {
    certs = makeTestCertificates();
    cluster = await startEtcd({
      tls: {
        certFile: certs.serverCertFile,
        keyFile: certs.serverKeyFile,
        caFile: certs.caFile,
        clientCertAuth: true,
        clientCertFile: certs.clientCertFile,
        clientKeyFile: certs.clientKeyFile,
      },
    });
  });
  after(async () => {
    await cluster?.close();
    if (certs !== undefined) rmSync(certs.dir, { recursive: true, force: true });
  });

  test('etcds:// with a CA and a client certificate from the environment', async () => {
    assert.match(cluster.url, /^etcds:\/\//);
    const env = {
      MUSTER_ETCD_CA_FILE: certs.caFile,
      MUSTER_ETCD_CERT_FILE: certs.clientCertFile,
      MUSTER_ETCD_KEY_FILE: certs.clientKeyFile,
    };
    const store = await openStore(cluster.url, { env });
    try {
      const w = store.watch('/tls/', { fromRevision: (await store.headRevision()) + 1 });
      await store.put('/tls/k', 'secret');
      assert.equal(text((await store.get('/tls/k'))!.value), 'secret');
      const { events } = await readUntil(w, (ev) => ev.length >= 1);
      w.close();
      assert.equal(events[0]?.kv.key, '/tls/k');
      const lease = await store.grantLease(5);
      assert.ok((await store.keepAlive(lease.id)) > 0);
    } finally {
      await store.close();
    }
  });

  test('without a client certificate, or trusting the wrong CA, nothing gets through', async () => {
    for (const options of [{ caFile: certs.caFile }, { env: {} }]) {
      const store = await openStore(cluster.url, { ...options, requestTimeout: '2s' });
      try {
        const err = await store.get('/tls/k').then(
          () => undefined,
          (e: unknown) => e,
        );
        assert.ok(isMusterError(err), `expected a coded error, got ${String(err)}`);
      } finally {
        await store.close();
      }
    }
  });
});
