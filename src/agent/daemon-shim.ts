/**
 * TEMPORARY stand-in for the daemon runtime (Contract B, `src/daemon/`), deleted when it lands.
 * Same shapes, plus `DaemonBody.reload` for SIGHUP (asked of the runtime).
 */
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { dirname } from 'node:path';
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { pino, type Logger } from 'pino';
import { Registry } from 'prom-client';
import { isMusterError, MusterError } from '../errors.js';
import { type Duration, toMillis } from '../util/duration.js';

export interface DaemonOptions {
  readonly name: string;
  readonly logLevel?: string;
  readonly logger?: Logger;
  readonly admin?: { listen?: string; tokenFile?: string } | false;
  readonly shutdownTimeout?: Duration;
  readonly handleSignals?: boolean;
}
export type AdminHandler = (
  req: IncomingMessage,
  res: ServerResponse,
  params: Record<string, string>,
) => unknown;
export interface AdminServer {
  readonly url: string;
  readonly token: string;
  route(method: string, path: string, handler: AdminHandler): void;
}
export interface DaemonContext {
  readonly log: Logger;
  readonly metrics: Registry;
  readonly admin: AdminServer;
  readonly stopping: AbortSignal;
}
export interface DaemonBody {
  stop(force: AbortSignal): Promise<void>;
  status?(): unknown;
  reload?(): Promise<void>;
}
export interface Daemon {
  readonly ctx: DaemonContext;
  readonly done: Promise<number>;
  stop(opts?: { force?: boolean }): Promise<number>;
}

const STATUS: Record<string, number> = {
  MUSTER_INVALID_ARGUMENT: 400,
  MUSTER_AGENT_CONFIG: 400,
  MUSTER_UNAUTHORIZED: 401,
  MUSTER_PERMISSION_DENIED: 403,
  MUSTER_NOT_FOUND: 404,
  MUSTER_ALREADY_EXISTS: 409,
  MUSTER_NOT_OWNER: 409,
  MUSTER_STALE_CONFIG: 503,
  MUSTER_MISSING_CONFIG: 404,
  MUSTER_UNAVAILABLE: 503,
  MUSTER_CLOSED: 503,
};
export function httpStatusOf(code: string): number {
  return STATUS[code] ?? 500;
}

function readOrCreateToken(file: string | undefined): string {
  if (file === undefined) return randomBytes(24).toString('hex');
  if (existsSync(file)) return readFileSync(file, 'utf8').trim();
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  const token = randomBytes(24).toString('hex');
  writeFileSync(file, `${token}\n`, { mode: 0o600 });
  chmodSync(file, 0o600);
  return token;
}

class Admin implements AdminServer {
  url = '';
  readonly token: string;
  readonly server: Server;
  readonly #routes: { method: string; parts: string[]; handler: AdminHandler }[] = [];
  constructor(token: string, metrics: Registry, status: () => unknown) {
    this.token = token;
    this.server = createServer((req, res) => void this.#handle(req, res));
    this.route('GET', '/metrics', async (_req, res) => {
      res.writeHead(200, { 'content-type': metrics.contentType });
      res.end(await metrics.metrics());
    });
    this.route('GET', '/healthz', () => ({ ok: true }));
    this.route('GET', '/v1/status', () => status());
  }
  route(method: string, path: string, handler: AdminHandler): void {
    // Later routes for the same path replace earlier ones (the body's /v1/status wins).
    const parts = path.split('/').filter(Boolean);
    const i = this.#routes.findIndex((r) => r.method === method && r.parts.join('/') === parts.join('/'));
    if (i >= 0) this.#routes.splice(i, 1);
    this.#routes.push({ method, parts, handler });
  }
  #authorized(req: IncomingMessage): boolean {
    const h = req.headers.authorization ?? '';
    const given = Buffer.from(h.startsWith('Bearer ') ? h.slice(7).trim() : '');
    const want = Buffer.from(this.token);
    return given.length === want.length && timingSafeEqual(given, want);
  }
  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://x');
    const parts = url.pathname.split('/').filter(Boolean);
    try {
      if (url.pathname !== '/healthz' && !this.#authorized(req)) {
        throw new MusterError(
          'MUSTER_UNAUTHORIZED',
          'send Authorization: Bearer <token from the token file>',
        );
      }
      for (const r of this.#routes) {
        if (r.method !== req.method || r.parts.length !== parts.length) continue;
        const params: Record<string, string> = {};
        let ok = true;
        for (let i = 0; i < parts.length; i++) {
          const want = r.parts[i] as string;
          const got = decodeURIComponent(parts[i] as string);
          if (want.startsWith(':')) params[want.slice(1)] = got;
          else if (want !== got) ok = false;
        }
        if (!ok) continue;
        const out = await r.handler(req, res, params);
        if (!res.headersSent && !res.writableEnded) {
          res.writeHead(200, { 'content-type': 'application/json' });
          res.end(JSON.stringify(out ?? {}));
        }
        return;
      }
      throw new MusterError('MUSTER_NOT_FOUND', `no route ${req.method} ${url.pathname}`);
    } catch (err) {
      if (res.headersSent) {
        res.end();
        return;
      }
      const e = isMusterError(err)
        ? err
        : new MusterError('MUSTER_INTERNAL', err instanceof Error ? err.message : String(err));
      res.writeHead(httpStatusOf(e.code), { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: { code: e.code, message: e.message, details: e.details } }));
    }
  }
}

export async function runDaemon(
  options: DaemonOptions,
  start: (ctx: DaemonContext) => Promise<DaemonBody>,
): Promise<Daemon> {
  const log = (options.logger ?? pino({ level: options.logLevel ?? 'info' }, pino.destination(2))).child({
    daemon: options.name,
  });
  const metrics = new Registry();
  const stopping = new AbortController();
  const force = new AbortController();
  let body: DaemonBody | undefined;
  const adminOpts = options.admin === false ? undefined : options.admin;
  const admin = new Admin(readOrCreateToken(adminOpts?.tokenFile), metrics, () => body?.status?.() ?? {});
  const listen = adminOpts?.listen ?? '127.0.0.1:0';
  const i = listen.lastIndexOf(':');
  await new Promise<void>((resolve, reject) => {
    admin.server.once('error', reject);
    admin.server.listen(Number(listen.slice(i + 1)), listen.slice(0, i), resolve);
  });
  const a = admin.server.address() as AddressInfo;
  admin.url = `http://${a.address}:${a.port}`;
  const ctx: DaemonContext = { log, metrics, admin, stopping: stopping.signal };
  let resolveDone!: (code: number) => void;
  const done = new Promise<number>((r) => (resolveDone = r));
  let stopped: Promise<number> | undefined;
  const onSignal = (sig: NodeJS.Signals): void => {
    if (sig === 'SIGHUP') {
      void body?.reload?.().catch((err: unknown) => log.error({ err: String(err) }, 'reload failed'));
      return;
    }
    log.info({ signal: sig }, stopped ? 'second signal: forcing' : 'stopping gracefully');
    void stop({ force: stopped !== undefined });
  };
  const signals: NodeJS.Signals[] = ['SIGTERM', 'SIGINT', 'SIGHUP'];
  const stop = (o: { force?: boolean } = {}): Promise<number> => {
    if (o.force) force.abort();
    stopped ??= (async () => {
      stopping.abort();
      const timeout = setTimeout(() => force.abort(), toMillis(options.shutdownTimeout ?? 30_000));
      let code = 0;
      try {
        await body?.stop(force.signal);
      } catch (err) {
        log.error({ err: String(err) }, 'stop failed');
        code = 1;
      }
      clearTimeout(timeout);
      admin.server.closeAllConnections();
      await new Promise<void>((r) => admin.server.close(() => r()));
      if (options.handleSignals !== false) for (const s of signals) process.off(s, onSignal);
      resolveDone(code);
      return code;
    })();
    return stopped;
  };
  if (options.handleSignals !== false) for (const s of signals) process.on(s, onSignal);
  try {
    body = await start(ctx);
  } catch (err) {
    await stop();
    throw err;
  }
  return { ctx, done, stop };
}
