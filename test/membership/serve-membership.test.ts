/** The membership suite (protocol-suite.ts) on `muster serve`, when this tree has it. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join as joinPath } from 'node:path';
import { membershipProtocolSuite } from './protocol-suite.js';

/** `muster serve`'s library surface, loaded by name so this file compiles before it is merged. */
interface ServerModule {
  startServer(options: { dataDir: string; listen: string }): Promise<{
    url: string;
    host: string;
    port: number;
    close(): Promise<void>;
  }>;
}
const SERVER_MODULE = '../../src/server/index.js';
const serverModule = (await import(SERVER_MODULE).catch(() => undefined)) as ServerModule | undefined;

membershipProtocolSuite({
  name: 'muster serve',
  skip: serverModule === undefined ? 'muster serve is not built in this tree (src/server)' : false,
  start: async () => {
    const dataDir = mkdtempSync(joinPath(tmpdir(), 'muster-serve-membership-'));
    const server = await (serverModule as ServerModule).startServer({ dataDir, listen: '127.0.0.1:0' });
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
