/**
 * Line-protocol mode (seed 001's stratum frontend): a TCP listener for newline-delimited JSON. Each
 * message is routed by a key read from a JSON field path of the message (or, with `sticky`, of the
 * connection's first message that has one) through the same {@link RoutingTable} as HTTP. While the
 * destination is unavailable — no owner, `moving`, a backend refusing connections or restarting — the
 * client's connection stays open and its messages wait, in order, then are delivered in order. Lines
 * from backends are relayed to the client whole.
 */
import { connect, Server, type Socket } from 'node:net';
import type { Clock } from '../clock.js';
import type { ErrorCode } from '../errors.js';
import type { LinesSettings, ProxyConfig } from './config.js';
import type { RoutingSource } from './routing-source.js';
import { splitHostPort, type ListenTarget } from './server.js';
import { onAbort } from '../util/abort.js';
import type { RoutingTable } from './table.js';

/** 1 MiB: a longer line is a broken or hostile client; the connection is closed. */
export const MAX_LINE_BYTES = 1024 * 1024;
/** 1000 messages waiting per client: past it the client's socket is paused (back-pressure). */
export const MAX_QUEUED_LINES = 1000;

/** Reads the key at `path` (dot-separated; array indexes are numbers) of a JSON message. */
export function keyOfMessage(line: string, path: readonly string[]): string | undefined {
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch {
    return undefined;
  }
  for (const p of path) {
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as Record<string, unknown>)[p];
  }
  return typeof v === 'string' || typeof v === 'number' ? String(v) : undefined;
}

/** Splits a byte stream into lines; `onLine` gets each without its '\n'. False when a line is too long. */
function lineSplitter(onLine: (line: string) => void): (chunk: Buffer) => boolean {
  let rest = '';
  return (chunk) => {
    const text = rest + chunk.toString('utf8');
    const parts = text.split('\n');
    rest = parts.pop() ?? '';
    for (const p of parts) if (p.trim() !== '') onLine(p.replace(/\r$/, ''));
    return rest.length <= MAX_LINE_BYTES;
  };
}

export class LineProxy {
  readonly #settings: LinesSettings;
  readonly #config: ProxyConfig;
  readonly #table: RoutingTable;
  readonly #source: RoutingSource;
  readonly #clock: Clock;
  readonly #servers: Server[] = [];
  readonly #clients = new Set<LineClient>();
  #closed = false;
  #draining = false;
  #idle: (() => void)[] = [];

  constructor(config: ProxyConfig, table: RoutingTable, source: RoutingSource, clock: Clock) {
    if (config.lines === undefined) throw new Error('LineProxy needs config.lines');
    this.#settings = config.lines;
    this.#config = config;
    this.#table = table;
    this.#source = source;
    this.#clock = clock;
  }

  /**
   * Listens on `targets` (default `lines.listen`: addresses, or listening handles passed by the proxy
   * master); resolves with `host:port` per listener.
   */
  async listen(targets: readonly ListenTarget[] = this.#settings.listen): Promise<string[]> {
    const out: string[] = [];
    for (const target of targets) {
      const server = new Server((socket) => {
        if (this.#closed || this.#draining) return socket.destroy();
        const client = new LineClient(socket, this);
        this.#clients.add(client);
        socket.once('close', () => {
          this.#clients.delete(client);
          client.close();
          if (this.#clients.size === 0) for (const w of this.#idle.splice(0)) w();
        });
      });
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        const done = (): void => {
          server.off('error', reject);
          resolve();
        };
        if (typeof target === 'string') server.listen(splitHostPort(target), done);
        else server.listen(target.handle, done);
      });
      const a = server.address();
      out.push(a !== null && typeof a === 'object' ? `${a.address}:${a.port}` : String(a));
      this.#servers.push(server);
    }
    return out;
  }

  /**
   * Stops accepting (the listening socket stays with the other workers) and keeps serving the
   * connected clients until they leave or `timeoutMs` passes; then closes what is left.
   */
  async drain(timeoutMs: number): Promise<void> {
    if (this.#closed) return;
    this.#draining = true;
    for (const s of this.#servers) s.close();
    if (this.#clients.size > 0) {
      await new Promise<void>((resolve) => {
        const timer = this.#clock.setTimeout(resolve, timeoutMs);
        this.#idle.push(() => {
          this.#clock.clearTimeout(timer);
          resolve();
        });
      });
    }
    await this.close();
  }

  /** Closes the listeners and every client connection. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const c of this.#clients) c.socket.destroy();
    await Promise.all(
      this.#servers.map(
        (s) => new Promise<void>((resolve) => (s.listening ? s.close(() => resolve()) : resolve())),
      ),
    );
  }

  get settings(): LinesSettings {
    return this.#settings;
  }
  get table(): RoutingTable {
    return this.#table;
  }
  get clock(): Clock {
    return this.#clock;
  }
  get holdTimeoutMs(): number {
    return this.#config.hold.timeoutMs;
  }
  get probeIntervalMs(): number {
    return this.#config.hold.probeIntervalMs;
  }

  /** Resolves on the next routing change, after `ms`, or when `signal` aborts. */
  changed(ms: number, signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      if (signal.aborted) return resolve();
      const done = (): void => {
        unsubscribe();
        this.#clock.clearTimeout(timer);
        off();
        resolve();
      };
      const unsubscribe = this.#source.subscribe(done);
      const timer = this.#clock.setTimeout(done, ms);
      const off = onAbort(signal, done);
    });
  }
}

/** One client connection: its messages in order, and one upstream connection per backend. */
class LineClient {
  readonly socket: Socket;
  readonly #proxy: LineProxy;
  readonly #queue: { line: string; key: string | undefined }[] = [];
  readonly #upstreams = new Map<string, Socket>();
  readonly #closing = new AbortController();
  #sticky: string | undefined;
  #pumping = false;

  constructor(socket: Socket, proxy: LineProxy) {
    this.socket = socket;
    this.#proxy = proxy;
    socket.setNoDelay(true);
    socket.on('error', () => socket.destroy());
    const split = lineSplitter((line) => this.#onLine(line));
    socket.on('data', (chunk: Buffer) => {
      if (!split(chunk)) {
        this.#error('MUSTER_INVALID_ARGUMENT', `a line longer than ${MAX_LINE_BYTES} bytes; closing`);
        socket.end();
      }
    });
  }

  close(): void {
    this.#closing.abort();
    for (const u of this.#upstreams.values()) u.destroy();
    this.#upstreams.clear();
  }

  #onLine(line: string): void {
    const { keyPath, sticky } = this.#proxy.settings;
    let key = sticky ? this.#sticky : undefined;
    if (key === undefined) {
      key = keyOfMessage(line, keyPath);
      if (sticky) this.#sticky = key;
    }
    this.#queue.push({ line, key });
    if (this.#queue.length >= MAX_QUEUED_LINES) this.socket.pause();
    void this.#pump();
  }

  async #pump(): Promise<void> {
    if (this.#pumping) return;
    this.#pumping = true;
    try {
      while (this.#queue.length > 0 && !this.#closing.signal.aborted) {
        const msg = this.#queue[0] as { line: string; key: string | undefined };
        if (msg.key === undefined) {
          this.#error(
            'MUSTER_NO_ROUTING_KEY',
            `the message has no routing key at ${this.#proxy.settings.keyPath.join('.')}`,
          );
        } else {
          await this.#deliver(msg.line, msg.key);
        }
        this.#queue.shift();
        if (this.#queue.length < MAX_QUEUED_LINES / 2) this.socket.resume();
      }
    } finally {
      this.#pumping = false;
    }
  }

  /** Sends `line` to the key's destination, waiting (in order) while it is unavailable. */
  async #deliver(line: string, key: string): Promise<void> {
    const proxy = this.#proxy;
    const deadline = proxy.clock.monotonic() + proxy.holdTimeoutMs;
    const signal = this.#closing.signal;
    while (!signal.aborted) {
      const r = proxy.table.resolve(key);
      if (r.ok) {
        const up = await this.#upstream(new URL(r.origin).host);
        if (up !== undefined) {
          up.write(`${line}\n`);
          return;
        }
      }
      const left = deadline - proxy.clock.monotonic();
      if (left <= 0) {
        this.#error(
          'MUSTER_HOLD_TIMEOUT',
          `no reachable destination for key '${key}' within ${proxy.holdTimeoutMs} ms`,
        );
        return;
      }
      await proxy.changed(Math.min(left, proxy.probeIntervalMs), signal);
    }
  }

  /** The open connection to `host`, connecting when needed; `undefined` when it refuses. */
  async #upstream(host: string): Promise<Socket | undefined> {
    const open = this.#upstreams.get(host);
    if (open !== undefined) return open;
    const { host: h, port } = splitHostPort(host);
    const socket = connect({ host: h, port, noDelay: true });
    const ok = await new Promise<boolean>((resolve) => {
      socket.once('connect', () => resolve(true));
      socket.once('error', () => resolve(false));
    });
    if (!ok || this.#closing.signal.aborted) {
      socket.destroy();
      return undefined;
    }
    this.#upstreams.set(host, socket);
    const forget = (): void => {
      if (this.#upstreams.get(host) === socket) this.#upstreams.delete(host);
    };
    socket.on('error', () => socket.destroy());
    // A backend closing (a restart, a drain) is forgotten at once: the next message reconnects.
    socket.on('end', forget);
    socket.on('close', forget);
    socket.on(
      'data',
      lineSplitter((reply) => this.socket.write(`${reply}\n`)),
    );
    return socket;
  }

  #error(code: ErrorCode, message: string): void {
    if (!this.socket.writable) return;
    this.socket.write(`${JSON.stringify({ error: { code, message } })}\n`);
  }
}
