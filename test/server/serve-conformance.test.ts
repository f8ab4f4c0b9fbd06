/** The Store contract on `muster serve`, through the etcd engine (the same client as for etcd). */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServer } from '../../src/server/index.js';
import { openStore } from '../../src/store/index.js';
import { storeConformance } from '../../src/testing/index.js';

storeConformance(
  'muster serve through the etcd engine',
  async () => {
    const dir = mkdtempSync(join(tmpdir(), 'muster-serve-conf-'));
    const server = await startServer({ dataDir: dir, listen: '127.0.0.1:0' });
    const cleanup = async (): Promise<void> => {
      await server.close();
      rmSync(dir, { recursive: true, force: true });
    };
    try {
      return { store: await openStore(server.url), cleanup };
    } catch (err) {
      await cleanup();
      throw err;
    }
  },
  { leaseSlackMs: 1000 },
);
