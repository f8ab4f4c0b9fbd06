import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServer } from '../../src/server/index.js';
import { configProcessSuite } from './multiprocess-suite.js';

configProcessSuite('muster serve', false, async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'muster-config-test-'));
  const server = await startServer({ dataDir, listen: '127.0.0.1:0' });
  return {
    url: server.url,
    endpoint: `${server.host}:${server.port}`,
    close: async () => {
      await server.close();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
});
