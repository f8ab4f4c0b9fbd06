/** The Store contract on real etcd: one member, and a 3-member cluster. */
import { describe } from 'node:test';
import { openStore } from '../../src/store/index.js';
import { ETCD_INSTALL_HINT, needBinary, startEtcd, storeConformance } from '../../src/testing/index.js';

describe('etcd engine', { skip: needBinary('etcd', ETCD_INSTALL_HINT) }, () => {
  storeConformance('etcd, single member', async () => {
    const cluster = await startEtcd({ members: 1 });
    return { store: await openStore(cluster.url), cleanup: () => cluster.close() };
  });

  storeConformance(
    'etcd, 3-member cluster',
    async () => {
      const cluster = await startEtcd({ members: 3 });
      return { store: await openStore(cluster.url), cleanup: () => cluster.close() };
    },
    { randomOps: 150 },
  );
});
