/** The Store contract on `muster serve`, through the etcd engine (the same client as for etcd). */
import { openStore } from '../../src/store/index.js';
import { startTempServe, storeConformance } from '../../src/testing/index.js';

storeConformance(
  'muster serve through the etcd engine',
  async () => {
    const serve = await startTempServe();
    const cleanup = (): Promise<void> => serve.close();
    try {
      return { store: await openStore(serve.url), cleanup };
    } catch (err) {
      await cleanup();
      throw err;
    }
  },
  { leaseSlackMs: 1000 },
);
