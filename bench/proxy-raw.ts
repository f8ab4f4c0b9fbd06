/**
 * A prototype of a leaner data path for `muster proxy`, for the CPU A/B in bench/proxy-cpu.ts only —
 * not the proxy. HTTP/1.1 on raw `net` sockets: it parses only the request head (strictly: bad request
 * line, obs-fold, CL+TE, duplicate or invalid Content-Length → 400; an oversized head → 431), routes with
 * muster's own key extractor and routing table, writes the head (hop-by-hop removed, X-Forwarded-*,
 * X-Request-Id) and the Content-Length body to a pooled keep-alive upstream socket, and frames the
 * response (Content-Length, chunked or close-delimited) to keep both connections alive. Missing on
 * purpose (the real proxy has them): chunked request bodies, upgrades, holds, timeouts, drain.
 */
import { randomUUID } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { Pool as UndiciPool } from 'undici';
import { extractKey, type KeySpec, type RoutingTable } from '../src/proxy/index.js';

const HEAD_END = Buffer.from('\r\n\r\n');
const MAX_HEAD = 16 * 1024;
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const REQUEST_LINE = /^([A-Z]+) (\S+) HTTP\/1\.([01])$/;
const HOP = new Set([
  'connection',
  'keep-alive',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'proxy-connection',
  'proxy-authorization',
  'proxy-authenticate',
  'expect',
]);

interface Head {
  readonly method: string;
  readonly url: string;
  readonly names: string[];
  readonly values: string[];
  readonly headers: IncomingHttpHeaders;
  readonly length: number;
  readonly close: boolean;
}

/** Parses a request head (without the blank line); a status code string when it must be refused. */
function parseHead(text: string): Head | 400 {
  const lines = text.split('\r\n');
  const m = REQUEST_LINE.exec(lines[0] ?? '');
  if (m === null) return 400;
  const names: string[] = [];
  const values: string[] = [];
  const headers: Record<string, string> = {};
  let length = -1;
  let te = false;
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i] as string;
    const c = line.charCodeAt(0);
    if (c === 32 || c === 9) return 400; // obs-fold
    const colon = line.indexOf(':');
    if (colon <= 0) return 400;
    const name = line.slice(0, colon);
    if (!TOKEN.test(name)) return 400;
    const value = line.slice(colon + 1).trim();
    const lower = name.toLowerCase();
    if (lower === 'content-length') {
      if (!/^\d{1,15}$/.test(value)) return 400;
      const n = Number(value);
      if (length !== -1 && length !== n) return 400;
      length = n;
    } else if (lower === 'transfer-encoding') te = true;
    names.push(lower);
    values.push(value);
    headers[lower] = lower in headers ? `${headers[lower]}, ${value}` : value;
  }
  if (te) return 400; // with or without Content-Length: the prototype takes no chunked bodies
  const conn = headers['connection']?.toLowerCase();
  return {
    method: m[1] as string,
    url: m[2] as string,
    names,
    values,
    headers,
    length: length === -1 ? 0 : length,
    close: m[3] === '0' ? conn !== 'keep-alive' : conn === 'close',
  };
}

/** One upstream keep-alive socket and its response parser. */
class Upstream {
  readonly socket: Socket;
  #buf: Buffer | undefined;
  #client: Client | undefined;
  /** -1: reading the head; -2: chunked; -3: until close; ≥ 0: body bytes left. */
  #left = -1;
  #chunkState = 0;
  constructor(
    readonly pool: Pool,
    port: number,
    host: string,
  ) {
    this.socket = connect(port, host);
    this.socket.setNoDelay(true);
    this.socket.on('data', (d: Buffer) => this.#data(d));
    this.socket.on('error', () => undefined);
    this.socket.on('close', () => {
      pool.forget(this);
      if (this.#left === -3) this.#client?.finish(true);
      else this.#client?.fail();
    });
  }

  send(client: Client, head: string, body: Buffer | undefined): void {
    this.#client = client;
    this.#left = -1;
    this.socket.write(
      body === undefined ? Buffer.from(head, 'latin1') : Buffer.concat([Buffer.from(head, 'latin1'), body]),
    );
  }

  #data(d: Buffer): void {
    const client = this.#client;
    if (client === undefined) return void this.socket.destroy();
    if (this.#left === -1) {
      const buf = this.#buf === undefined ? d : Buffer.concat([this.#buf, d]);
      const end = buf.indexOf(HEAD_END);
      if (end < 0) {
        this.#buf = buf;
        return;
      }
      this.#buf = undefined;
      const lines = buf.toString('latin1', 0, end).split('\r\n');
      const status = Number((lines[0] ?? '').slice(9, 12));
      let out = `${(lines[0] ?? '').slice(0, 12)} ${(lines[0] ?? '').slice(13)}\r\n`;
      let length = -1;
      let chunked = false;
      let closeAfter = false;
      for (let i = 1; i < lines.length; i++) {
        const line = lines[i] as string;
        const colon = line.indexOf(':');
        const lower = line.slice(0, colon).toLowerCase();
        if (lower === 'content-length') length = Number(line.slice(colon + 1).trim());
        else if (lower === 'transfer-encoding') chunked = /chunked/i.test(line);
        else if (lower === 'connection' && /close/i.test(line)) closeAfter = true;
        if (HOP.has(lower) && lower !== 'transfer-encoding') continue;
        out += `${line}\r\n`;
      }
      const bodyless = status === 204 || status === 304 || status < 200 || client.head?.method === 'HEAD';
      this.#left = bodyless ? 0 : chunked ? -2 : length >= 0 ? length : -3;
      out += this.#left === -3 || client.head?.close === true ? 'connection: close\r\n\r\n' : '\r\n';
      this.#closeAfter = closeAfter;
      d = buf.subarray(end + 4);
      // head and the body bytes that came with it in one write (one syscall)
      client.socket.cork();
      client.socket.write(out, 'latin1');
      if (d.length > 0 || this.#left === 0) this.#body(client, d);
      client.socket.uncork();
      return;
    }
    this.#body(client, d);
  }

  #closeAfter = false;

  #body(client: Client, d: Buffer): void {
    if (this.#left >= 0) {
      const take = Math.min(this.#left, d.length);
      if (take > 0) client.socket.write(take === d.length ? d : d.subarray(0, take));
      this.#left -= take;
      if (this.#left === 0) this.#done(client);
      return;
    }
    if (this.#left === -3) {
      client.socket.write(d);
      return;
    }
    // chunked: pass the bytes through and find the terminating 0-chunk
    client.socket.write(d);
    if (this.#scanChunks(d)) this.#done(client);
  }

  #pendingChunk = 0;
  #line = '';
  /** Follows the chunk framing of `d`; true at the end of the last chunk's trailer. */
  #scanChunks(d: Buffer): boolean {
    let i = 0;
    while (i < d.length) {
      if (this.#chunkState === 1) {
        const take = Math.min(this.#pendingChunk, d.length - i);
        i += take;
        this.#pendingChunk -= take;
        if (this.#pendingChunk === 0) this.#chunkState = 0;
        continue;
      }
      const c = d[i++] as number;
      if (c !== 10) {
        this.#line += String.fromCharCode(c);
        continue;
      }
      const line = this.#line.replace(/\r$/, '');
      this.#line = '';
      if (this.#chunkState === 2) {
        if (line === '') {
          this.#chunkState = 0;
          return true;
        }
        continue;
      }
      if (line === '') continue; // the CRLF after a chunk's data
      const size = parseInt(line, 16);
      if (size === 0) this.#chunkState = 2;
      else {
        this.#pendingChunk = size;
        this.#chunkState = 1;
      }
    }
    return false;
  }

  #done(client: Client): void {
    this.#client = undefined;
    this.#chunkState = 0;
    if (this.#closeAfter) this.socket.destroy();
    else this.pool.release(this);
    client.finish(false);
  }
}

class Pool {
  readonly #idle: Upstream[] = [];
  constructor(
    readonly port: number,
    readonly host: string,
  ) {}
  take(): Upstream {
    return this.#idle.pop() ?? new Upstream(this, this.port, this.host);
  }
  release(u: Upstream): void {
    this.#idle.push(u);
  }
  forget(u: Upstream): void {
    const i = this.#idle.indexOf(u);
    if (i >= 0) this.#idle.splice(i, 1);
  }
}

/** One client connection: one request at a time (pipelined ones wait in the buffer). */
class Client {
  #buf: Buffer | undefined;
  head: Head | undefined;
  #busy = false;
  constructor(
    readonly socket: Socket,
    readonly proxy: RawProxy,
  ) {
    socket.setNoDelay(true);
    socket.on('data', (d: Buffer) => {
      this.#buf = this.#buf === undefined ? d : Buffer.concat([this.#buf, d]);
      if (!this.#busy) this.#next();
    });
    socket.on('error', () => undefined);
  }

  #refuse(status: string): void {
    this.socket.end(`HTTP/1.1 ${status}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`);
    this.#buf = undefined;
    this.#busy = true;
  }

  #next(): void {
    const buf = this.#buf;
    if (buf === undefined) return;
    const end = buf.indexOf(HEAD_END);
    if (end < 0) {
      if (buf.length > MAX_HEAD) this.#refuse('431 Request Header Fields Too Large');
      return;
    }
    if (end > MAX_HEAD) return this.#refuse('431 Request Header Fields Too Large');
    const head = parseHead(buf.toString('latin1', 0, end));
    if (head === 400) return this.#refuse('400 Bad Request');
    const total = end + 4 + head.length;
    if (buf.length < total) return; // the body is not all here yet (the prototype buffers it)
    const body = head.length > 0 ? buf.subarray(end + 4, total) : undefined;
    this.#buf = buf.length === total ? undefined : buf.subarray(total);
    this.#busy = true;
    this.head = head;
    this.proxy.forward(this, head, body);
  }

  finish(close: boolean): void {
    this.#busy = false;
    if (close || this.head?.close === true) {
      this.socket.end();
      return;
    }
    this.head = undefined;
    this.#next();
  }

  fail(): void {
    this.socket.destroy();
  }
}

export class RawProxy {
  readonly server: Server;
  readonly #pools = new Map<string, Pool>();
  readonly #undici = new Map<string, UndiciPool>();
  /** `undici`: the same raw server side, but undici's `dispatch` upstream (to split the gain). */
  constructor(
    readonly table: RoutingTable,
    readonly key: KeySpec,
    readonly upstream: 'raw' | 'undici' = 'raw',
  ) {
    this.server = createServer((s) => new Client(s, this));
  }

  forward(client: Client, head: Head, body: Buffer | undefined): void {
    const key = extractKey(this.key, head.url, head.headers);
    const r = key === undefined ? undefined : this.table.resolve(key);
    if (r === undefined || !r.ok) {
      client.socket.write('HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n');
      client.finish(false);
      return;
    }
    if (this.upstream === 'undici') return this.#viaUndici(client, head, body, r.origin);
    let pool = this.#pools.get(r.origin);
    if (pool === undefined) {
      const url = new URL(r.origin);
      this.#pools.set(r.origin, (pool = new Pool(Number(url.port || 80), url.hostname)));
    }
    const listed = head.headers['connection'];
    const extra = listed === undefined ? undefined : new Set(listed.toLowerCase().split(/\s*,\s*/));
    let out = `${head.method} ${head.url} HTTP/1.1\r\n`;
    let id: string | undefined;
    let xff: string | undefined;
    for (let i = 0; i < head.names.length; i++) {
      const name = head.names[i] as string;
      if (HOP.has(name) || extra?.has(name) === true || name === 'content-length') continue;
      if (name === 'x-request-id') id ??= head.values[i];
      else if (name === 'x-forwarded-for')
        xff = xff === undefined ? head.values[i] : `${xff}, ${head.values[i]}`;
      else out += `${name}: ${head.values[i] as string}\r\n`;
    }
    const ip = client.socket.remoteAddress ?? 'unknown';
    out += `x-forwarded-for: ${xff === undefined ? ip : `${xff}, ${ip}`}\r\nx-forwarded-proto: http\r\n`;
    if (head.headers.host !== undefined) out += `x-forwarded-host: ${head.headers.host}\r\n`;
    out += `x-request-id: ${id ?? randomUUID()}\r\n`;
    if (head.length > 0) out += `content-length: ${head.length}\r\n`;
    pool.take().send(client, `${out}\r\n`, body);
  }

  #viaUndici(client: Client, head: Head, body: Buffer | undefined, origin: string): void {
    let pool = this.#undici.get(origin);
    if (pool === undefined) this.#undici.set(origin, (pool = new UndiciPool(origin, { connections: 256 })));
    const headers: Record<string, string> = {};
    for (let i = 0; i < head.names.length; i++) {
      const name = head.names[i] as string;
      if (HOP.has(name) || name === 'content-length') continue;
      headers[name] = head.values[i] as string;
    }
    const ip = client.socket.remoteAddress ?? 'unknown';
    headers['x-forwarded-for'] = ip;
    headers['x-forwarded-proto'] = 'http';
    if (head.headers.host !== undefined) headers['x-forwarded-host'] = head.headers.host;
    headers['x-request-id'] ??= randomUUID();
    const socket = client.socket;
    let chunked = false;
    pool.dispatch(
      { origin, path: head.url, method: head.method, headers, body: body ?? null },
      {
        onConnect() {},
        onHeaders(statusCode: number, raw: Buffer[], _resume: () => void, statusText: string) {
          let out = `HTTP/1.1 ${statusCode} ${statusText}\r\n`;
          let length = false;
          for (let i = 0; i < raw.length; i += 2) {
            const name = (raw[i] as Buffer).toString('latin1');
            const lower = name.toLowerCase();
            if (HOP.has(lower)) continue;
            if (lower === 'content-length') length = true;
            out += `${name}: ${(raw[i + 1] as Buffer).toString('latin1')}\r\n`;
          }
          chunked =
            !length &&
            head.method !== 'HEAD' &&
            statusCode >= 200 &&
            statusCode !== 204 &&
            statusCode !== 304;
          if (chunked) out += 'transfer-encoding: chunked\r\n';
          socket.write(`${out}\r\n`, 'latin1');
          return true;
        },
        onData(chunk: Buffer) {
          if (chunked) socket.write(`${chunk.length.toString(16)}\r\n`);
          socket.write(chunk);
          if (chunked) socket.write('\r\n');
          return true;
        },
        onComplete() {
          if (chunked) socket.write('0\r\n\r\n');
          client.finish(false);
        },
        onError() {
          client.fail();
        },
      },
    );
  }
}
