/**
 * The package root's `startServer`: loads the server (and gRPC) on first use, so that users of the
 * memory engine alone never load gRPC. `muster/server` exports the full server surface.
 */
import type { MusterServer, ServerOptions } from './server.js';

export type { MusterServer, ServerOptions };

/**
 * Starts `muster serve` in-process: recovers `options.dataDir` and serves the etcd v3 API on
 * `options.listen`. See {@link import('./server.js').startServer} for the options and error codes.
 */
export async function startServer(options: ServerOptions = {}): Promise<MusterServer> {
  const server = await import('./server.js');
  return server.startServer(options);
}
