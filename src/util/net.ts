/** Host-and-port addresses, parsed once for every listener (`muster serve`, the admin servers). */
import { createServer } from 'node:net';
import { invalidArgument } from '../errors.js';

/**
 * Parses `host:port`, `[v6]:port` or `:port` (loopback, 127.0.0.1); port 0 means any free port.
 * Throws `MUSTER_INVALID_ARGUMENT` naming `what` (e.g. `--listen`) otherwise.
 */
export function parseHostPort(value: string, what = '--listen'): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(value);
  const port = m === null ? NaN : Number(m[3]);
  if (m === null || port > 65535) {
    throw invalidArgument(`${what} must be host:port (e.g. 127.0.0.1:2379), got '${value}'`);
  }
  return { host: m[1] ?? (m[2] || '127.0.0.1'), port };
}

/** True for addresses only this machine can reach. */
export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

/** `host:port` for URLs: IPv6 hosts in brackets. */
export function formatHostPort(host: string, port: number): string {
  return `${host.includes(':') ? `[${host}]` : host}:${port}`;
}

/**
 * A port that was free on `host` a moment ago (the OS picked it for a listener that was then
 * closed). For tests, benches and the demo, which must name ports up front; a daemon listens on
 * port 0 instead and reports what it got.
 */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.once('error', reject);
    server.listen(0, host, () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}
