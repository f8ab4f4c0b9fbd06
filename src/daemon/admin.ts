/**
 * The admin HTTP server of a daemon: node:http on loopback by default, JSON in and out, coded errors
 * mapped to HTTP statuses through {@link httpStatusOf}, an optional bearer token (required beyond
 * loopback), and handlers that may stream (SSE) by writing to the response themselves.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { httpStatusOf, invalidArgument, isMusterError, MusterError } from '../errors.js';
import { formatHostPort, isLoopback, parseHostPort } from '../util/net.js';
import { checkToken, readTokenFile, tokensEqual } from '../util/token.js';
import { Router } from './router.js';

/**
 * A route handler. A returned value (object, array, string…) is sent as JSON with status 200;
 * `undefined` sends 204, unless the handler has written the response itself (SSE, text). A thrown
 * `MusterError` is sent as `{ error: { code, message, details } }` with `httpStatusOf(code)`; any
 * other throw as `MUSTER_INTERNAL` (500), and is logged.
 */
export type AdminHandler = (
  req: IncomingMessage,
  res: ServerResponse,
  params: Readonly<Record<string, string>>,
  url: URL,
) => unknown;

export interface AdminServer {
  /** `http://127.0.0.1:PORT`; empty when the daemon runs without an admin server. */
  readonly url: string;
  /** Adds a route; `path` may hold `:param` segments. Throws `MUSTER_INVALID_ARGUMENT` for a bad or duplicate one. */
  route(method: string, path: string, handler: AdminHandler): void;
  /** Adds a route served without the admin token (a probe, or a read-only page on loopback). */
  openRoute(method: string, path: string, handler: AdminHandler): void;
}

/** Largest JSON request body {@link readJsonBody} accepts by default: 1 MiB. */
export const DEFAULT_MAX_BODY_BYTES = 1024 * 1024;

/**
 * Reads a JSON request body. Throws `MUSTER_VALUE_TOO_LARGE` (413) past `maxBytes` and
 * `MUSTER_INVALID_ARGUMENT` (400) for a body that is not JSON.
 */
export async function readJsonBody(
  req: IncomingMessage,
  { maxBytes = DEFAULT_MAX_BODY_BYTES }: { maxBytes?: number } = {},
): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > maxBytes) {
      throw new MusterError('MUSTER_VALUE_TOO_LARGE', `the request body is larger than ${maxBytes} bytes`);
    }
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  if (text.trim() === '') return undefined;
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new MusterError(
      'MUSTER_INVALID_ARGUMENT',
      `the request body is not JSON: ${(err as Error).message}`,
      {
        cause: err,
      },
    );
  }
}

/** Writes `value` as a JSON response. */
export function sendJson(res: ServerResponse, status: number, value: unknown): void {
  const body = JSON.stringify(value);
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
  });
  res.end(body);
}

/** Starts a server-sent-events response: headers written, connection kept open. */
export function startSse(res: ServerResponse): (event: string, data: unknown) => boolean {
  res.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-store',
    connection: 'keep-alive',
  });
  res.flushHeaders();
  return (event, data) => res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
}

/** The server behind {@link AdminServer}; the runtime starts and closes it. */
export class AdminHttpServer implements AdminServer {
  readonly #router = new Router();
  readonly #log: Logger;
  #token: string | undefined;
  #server: Server | undefined;
  #url = '';
  #closing: Promise<void> | undefined;

  constructor(log: Logger) {
    this.#log = log;
  }

  get url(): string {
    return this.#url;
  }

  /** True when requests must carry the bearer token. */
  get requiresToken(): boolean {
    return this.#token !== undefined;
  }

  route(method: string, path: string, handler: AdminHandler): void {
    this.#router.add(method, path, handler);
  }

  /** A route served without the token (`/healthz`: probes carry no secrets and learn none). */
  openRoute(method: string, path: string, handler: AdminHandler): void {
    this.#router.add(method, path, handler, true);
  }

  /**
   * Listens on `listen`. Throws `MUSTER_INVALID_ARGUMENT` for a bad address, a bad token, or a
   * non-loopback address without a token, and `MUSTER_ADDRESS_IN_USE` when the port is taken.
   */
  async listen(options: { listen: string; tokenFile?: string; token?: string }): Promise<string> {
    const { host, port } = parseHostPort(options.listen, 'the admin address');
    if (options.token !== undefined) checkToken(options.token, 'the admin token');
    this.#token =
      options.tokenFile !== undefined
        ? readTokenFile(options.tokenFile, 'the admin token file')
        : options.token;
    if (this.#token === undefined && !isLoopback(host)) {
      throw invalidArgument(
        `the admin API on ${host} would be reachable from the network without a token; give an admin token file, or listen on 127.0.0.1`,
        { host, port },
      );
    }
    const server = createServer((req, res) => void this.#handle(req, res));
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, host, () => {
          server.off('error', reject);
          resolve();
        });
      });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EADDRINUSE') {
        throw new MusterError(
          'MUSTER_ADDRESS_IN_USE',
          `the admin address ${formatHostPort(host, port)} is already in use; pass another (port 0 picks a free one)`,
          { cause: err, details: { host, port } },
        );
      }
      throw invalidArgument(`cannot listen on ${formatHostPort(host, port)}: ${(err as Error).message}`, {
        host,
        port,
      });
    }
    server.on('error', (err) => this.#log.error({ err }, 'admin server error'));
    this.#server = server;
    this.#url = `http://${formatHostPort(host, (server.address() as AddressInfo).port)}`;
    return this.#url;
  }

  /** Stops listening and ends every connection (streams included); idempotent. */
  close(): Promise<void> {
    this.#closing ??= new Promise<void>((resolve) => {
      const server = this.#server;
      if (server === undefined) {
        resolve();
        return;
      }
      server.close(() => resolve());
      server.closeAllConnections();
    });
    return this.#closing;
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const method = req.method ?? 'GET';
    let url: URL;
    try {
      url = new URL(req.url ?? '/', 'http://admin.invalid');
    } catch {
      url = new URL('http://admin.invalid/');
    }
    try {
      const match = this.#router.match(method, url.pathname);
      if (match.kind === 'none') {
        this.#authorize(req);
        throw new MusterError('MUSTER_NOT_FOUND', `no admin route ${method} ${url.pathname}`, {
          details: { routes: this.#router.list() },
        });
      }
      if (match.kind === 'method') {
        this.#authorize(req);
        res.setHeader('allow', match.allow.join(', '));
        throw new MusterError(
          'MUSTER_METHOD_NOT_ALLOWED',
          `${url.pathname} answers ${match.allow.join(', ')}, not ${method}`,
          { details: { allow: match.allow } },
        );
      }
      if (!match.route.open) this.#authorize(req);
      const result: unknown = await match.route.handler(req, res, match.params, url);
      if (res.headersSent || res.writableEnded) return;
      if (result === undefined) {
        res.writeHead(204).end();
        return;
      }
      sendJson(res, 200, result);
    } catch (err) {
      this.#fail(res, method, url.pathname, err);
    }
  }

  /** Throws `MUSTER_UNAUTHENTICATED` unless the request carries the token (when there is one). */
  #authorize(req: IncomingMessage): void {
    if (this.#token === undefined) return;
    const header = req.headers.authorization ?? '';
    const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
    if (m === null || !tokensEqual(m[1] as string, this.#token)) {
      throw new MusterError(
        'MUSTER_UNAUTHENTICATED',
        m === null
          ? 'this admin API needs the header Authorization: Bearer <token>'
          : 'the bearer token is not the admin token',
      );
    }
  }

  #fail(res: ServerResponse, method: string, path: string, err: unknown): void {
    const coded = isMusterError(err)
      ? err
      : new MusterError(
          'MUSTER_INTERNAL',
          `internal error: ${err instanceof Error ? err.message : String(err)}`,
          {
            cause: err,
          },
        );
    if (!isMusterError(err)) this.#log.error({ err, method, path }, 'admin handler failed');
    else if (coded.code === 'MUSTER_INTERNAL') this.#log.error({ err, method, path }, 'admin handler failed');
    if (res.headersSent) {
      // A stream that failed half-way: the client sees the connection end.
      res.destroy(coded);
      return;
    }
    if (coded.code === 'MUSTER_UNAUTHENTICATED') res.setHeader('www-authenticate', 'Bearer');
    sendJson(res, httpStatusOf(coded.code), {
      error: { code: coded.code, message: coded.message, details: coded.details },
    });
  }
}
