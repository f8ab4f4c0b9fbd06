/**
 * TEMPORARY loopback admin HTTP server with a bearer token, until the daemon runtime's AdminServer
 * (Contract B) lands; the routes stay the same when it does. Routes: GET /healthz, GET /metrics,
 * GET /v1/status, GET /v1/held, GET /v1/routes/:key, POST /v1/reload.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { isMusterError, MusterError } from '../errors.js';
import { splitHostPort } from './server.js';

export interface AdminRoutes {
  status(): Promise<unknown>;
  held(): Promise<unknown>;
  explain(key: string): Promise<unknown>;
  reload(): Promise<unknown>;
  metrics(): Promise<{ contentType: string; text: string }>;
}

export interface AdminHandle {
  readonly url: string;
  readonly token: string;
  close(): Promise<void>;
}

/** Reads the token from `tokenFile`, creating it (mode 0600, 32 random bytes) when missing. */
export function adminToken(tokenFile: string | undefined): string {
  if (tokenFile === undefined) return randomBytes(24).toString('base64url');
  if (!existsSync(tokenFile)) {
    writeFileSync(tokenFile, `${randomBytes(24).toString('base64url')}\n`, { mode: 0o600, flag: 'wx' });
  }
  return readFileSync(tokenFile, 'utf8').trim();
}

const STATUS: Record<string, number> = {
  MUSTER_INVALID_ARGUMENT: 400,
  MUSTER_NOT_FOUND: 404,
  MUSTER_UNAVAILABLE: 503,
};

export async function startAdmin(listen: string, token: string, routes: AdminRoutes): Promise<AdminHandle> {
  const { host, port } = splitHostPort(listen);
  if (host !== '127.0.0.1' && host !== '::1' && host !== 'localhost') {
    throw new MusterError(
      'MUSTER_INVALID_ARGUMENT',
      `admin.listen must be a loopback address, got ${listen}`,
    );
  }
  const expected = Buffer.from(`Bearer ${token}`);
  const server: Server = createServer((req, res) => {
    const send = (status: number, body: unknown, type = 'application/json'): void => {
      const text = typeof body === 'string' ? body : `${JSON.stringify(body)}\n`;
      res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(text) });
      res.end(text);
    };
    const url = new URL(req.url ?? '/', 'http://admin');
    if (url.pathname === '/healthz') return send(200, { ok: true });
    const given = Buffer.from(req.headers.authorization ?? '');
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
      return send(401, {
        error: { code: 'MUSTER_PERMISSION_DENIED', message: 'missing or wrong admin token' },
      });
    }
    const run = async (): Promise<void> => {
      if (req.method === 'GET' && url.pathname === '/metrics') {
        const m = await routes.metrics();
        return send(200, m.text, m.contentType);
      }
      if (req.method === 'GET' && url.pathname === '/v1/status') return send(200, await routes.status());
      if (req.method === 'GET' && url.pathname === '/v1/held') return send(200, await routes.held());
      if (req.method === 'GET' && url.pathname.startsWith('/v1/routes/')) {
        return send(200, await routes.explain(decodeURIComponent(url.pathname.slice('/v1/routes/'.length))));
      }
      if (req.method === 'POST' && url.pathname === '/v1/reload') return send(200, await routes.reload());
      send(404, {
        error: { code: 'MUSTER_NOT_FOUND', message: `no admin route ${req.method ?? ''} ${url.pathname}` },
      });
    };
    run().catch((err: unknown) => {
      const body = isMusterError(err)
        ? { error: err.toJSON() }
        : { error: { code: 'MUSTER_INTERNAL', message: (err as Error).message } };
      send(isMusterError(err) ? (STATUS[err.code] ?? 500) : 500, body);
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const a = server.address() as AddressInfo;
  let closing: Promise<void> | undefined;
  return {
    url: `http://${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`,
    token,
    close: () =>
      (closing ??= new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      })),
  };
}
