/** The membership suite (protocol-suite.ts) on `muster serve`. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join as joinPath } from 'node:path';
import { startServer } from '../../src/server/index.js';
import { membershipProtocolSuite } from './protocol-suite.js';

membershipProtocolSuite({
  name: 'muster serve',
  skip: false,
  start: async () => {
    const dataDir = mkdtempSync(joinPath(tmpdir(), 'muster-serve-membership-'));
    const server = await startServer({ dataDir, listen: '127.0.0.1:0' });
    return {
      url: server.url,
      endpoint: `${server.host}:${server.port}`,
      close: async () => {
        await server.close();
        rmSync(dataDir, { recursive: true, force: true });
      },
    };
  },
});
