/** Backends, keys and requests for the proxy tests. */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Agent, request } from 'undici';
import { partitionForKey } from '../../src/placement/index.js';
import { proxyConfigFrom, type ProxyConfig } from '../../src/proxy/index.js';
import type { Store } from '../../src/store/index.js';

export interface Backend {
  readonly name: string;
  readonly address: string;
  readonly port: number;
  readonly server: Server;
  /** Requests received, by path. */
  readonly seen: string[];
  close(): Promise<void>;
}

export type BackendHandler = (req: IncomingMessage, res: ServerResponse) => boolean | void;

/**
 * An HTTP backend answering `{ backend, path, headers }`; `/poll?ms=N` answers after N ms (a
 * long-poll); `/echo` echoes the body. `handler` may take a request first (return true).
 */
export async function startBackend(name: string, handler?: BackendHandler, port = 0): Promise<Backend> {
  const seen: string[] = [];
  const server = createServer((req, res) => {
    seen.push(req.url ?? '');
    if (handler?.(req, res) === true) return;
    const url = new URL(req.url ?? '/', 'http://x');
    const answer = (extra: object = {}): void => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(
        JSON.stringify({ backend: name, path: req.url, method: req.method, headers: req.headers, ...extra }),
      );
    };
    if (url.pathname === '/poll') {
      const t = setTimeout(answer, Number(url.searchParams.get('ms') ?? '1000'));
      res.on('close', () => clearTimeout(t));
      return;
    }
    if (url.pathname === '/echo') {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => answer({ body: Buffer.concat(chunks).toString() }));
      return;
    }
    req.resume();
    req.on('end', () => answer());
  });
  server.keepAliveTimeout = 5000;
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  const p = (server.address() as AddressInfo).port;
  return {
    name,
    address: `127.0.0.1:${p}`,
    port: p,
    server,
    seen,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** A key that hashes to partition index `partition` of `count`. */
export function keyFor(partition: number, count: number, prefix = 'k'): string {
  for (let i = 0; ; i++) {
    const k = `${prefix}${i}`;
    if (partitionForKey(k, count) === partition) return k;
  }
}

/** Service `service` with one partition, owned by `instance` whose endpoint is `address`. */
export async function ownOnePartition(
  store: Store,
  service: string,
  instance: string,
  address: string,
): Promise<void> {
  await store.put(`/muster/services/${service}/spec`, JSON.stringify({ partitions: 1 }));
  await store.put(`/muster/services/${service}/owners/0`, JSON.stringify({ instance, since: '', address }));
}

/** A config on a free loopback port keyed by the `x-key` header. */
export function testConfig(service: string, extra: Record<string, unknown> = {}): ProxyConfig {
  return proxyConfigFrom({
    service,
    listen: '127.0.0.1:0',
    key: 'header:x-key',
    admin: false,
    workers: 1,
    ...extra,
  });
}

export interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  json(): { backend?: string; error?: { code: string; message: string }; [k: string]: unknown };
}

/** One request through `dispatcher` to `address`. */
export async function call(
  dispatcher: Agent,
  address: string,
  path: string,
  options: {
    method?: string;
    key?: string;
    headers?: Record<string, string>;
    body?: string;
    signal?: AbortSignal;
  } = {},
): Promise<Answer> {
  const r = await request(`http://${address}${path}`, {
    dispatcher,
    method: (options.method ?? 'GET') as 'GET',
    headers: { ...(options.key === undefined ? {} : { 'x-key': options.key }), ...options.headers },
    ...(options.body === undefined ? {} : { body: options.body }),
    ...(options.signal === undefined ? {} : { signal: options.signal }),
  });
  const text = await r.body.text();
  return {
    status: r.statusCode,
    headers: r.headers,
    text,
    json: () => JSON.parse(text) as ReturnType<Answer['json']>,
  };
}

/** Sends raw bytes and returns everything the server sends until it closes (or `timeoutMs`). */
export async function rawRequest(address: string, bytes: string | Buffer, timeoutMs = 5000): Promise<string> {
  const { connect } = await import('node:net');
  const [host, port] = [
    address.slice(0, address.lastIndexOf(':')),
    Number(address.slice(address.lastIndexOf(':') + 1)),
  ];
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const s = connect(port, host, () => s.write(bytes));
    const t = setTimeout(() => {
      s.destroy();
      resolve(Buffer.concat(chunks).toString());
    }, timeoutMs);
    s.on('data', (c: Buffer) => chunks.push(c));
    s.on('error', (err) => {
      clearTimeout(t);
      if (chunks.length > 0) resolve(Buffer.concat(chunks).toString());
      else reject(err);
    });
    s.on('close', () => {
      clearTimeout(t);
      resolve(Buffer.concat(chunks).toString());
    });
  });
}
