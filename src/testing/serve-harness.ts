/**
 * A throw-away `muster serve` for tests, benchmarks and the demo: started in-process on a loopback
 * port with a fresh temporary data directory, which `close()` removes.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { MusterServer, ServerOptions } from '../server/index.js';

export interface TempServe {
  readonly server: MusterServer;
  /** `etcd://host:port`, for `openStore`. */
  readonly url: string;
  /** `host:port`, for a fault proxy or etcdctl. */
  readonly endpoint: string;
  readonly dataDir: string;
  /** Stops the server and deletes its data directory; idempotent. */
  close(): Promise<void>;
}

/**
 * Starts `muster serve` on `127.0.0.1:0` with a new data directory under the system's temp dir
 * (`options` may set anything but the data directory). The server module is loaded on first use.
 */
export async function startTempServe(options: Omit<ServerOptions, 'dataDir'> = {}): Promise<TempServe> {
  const { startServer } = await import('../server/index.js');
  const dataDir = await mkdtemp(join(tmpdir(), 'muster-serve-'));
  let server: MusterServer;
  try {
    server = await startServer({ listen: '127.0.0.1:0', ...options, dataDir });
  } catch (err) {
    await rm(dataDir, { recursive: true, force: true });
    throw err;
  }
  let closing: Promise<void> | undefined;
  return {
    server,
    url: server.url,
    endpoint: `${server.host}:${server.port}`,
    dataDir,
    close: () =>
      (closing ??= (async () => {
        await server.close();
        await rm(dataDir, { recursive: true, force: true });
      })()),
  };
}
