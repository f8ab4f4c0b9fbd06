/**
 * A fault-injecting TCP proxy to put between a client and a server in tests.
 *
 * Each direction (`toServer`: client → server, `toClient`: server → client) has its own mode:
 * - `pass`: bytes flow at once;
 * - `delay`: bytes flow after a fixed delay, in order;
 * - `pause`: bytes are held and flow, in order, when the direction is set back to pass or delay;
 * - `blackhole`: bytes are dropped silently (the connections stay open, as behind a dead router).
 *   Dropped bytes are gone for good. TCP never delivers a stream with a gap in it: the sender's TCP
 *   retransmits until it gives up and then resets the connection. So when a direction leaves
 *   `blackhole`, every connection that lost bytes to it is reset at once (the earliest moment real
 *   TCP could, and the only outcome it allows), while a connection that carried nothing while the
 *   link was dark carries on. Use `pause` for an outage whose bytes are retransmitted when it heals.
 * `cutAll()` destroys every open connection at once (both sides see a reset).
 */
import { createServer, type Server, type Socket, connect } from 'node:net';

export type Direction = 'toServer' | 'toClient';
export type FaultMode =
  | { readonly kind: 'pass' }
  | { readonly kind: 'delay'; readonly ms: number }
  | { readonly kind: 'pause' }
  | { readonly kind: 'blackhole' };

export interface FaultProxyOptions {
  /** `host:port` of the server. */
  target: string;
  /** Address to listen on. Default: 127.0.0.1. */
  host?: string;
  /** Port to listen on. Default: 0 (any free port). */
  port?: number;
}

export interface FaultProxy {
  /** `host:port` clients connect to. */
  readonly endpoint: string;
  /** Number of open client connections. */
  readonly connections: number;
  /** Number of client connections accepted since the start (a client that re-dials raises it). */
  readonly accepted: number;
  /** Sets the mode of one direction, or both when `direction` is omitted. */
  set(mode: FaultMode, direction?: Direction): void;
  mode(direction: Direction): FaultMode;
  pass(direction?: Direction): void;
  delay(ms: number, direction?: Direction): void;
  pause(direction?: Direction): void;
  blackhole(direction?: Direction): void;
  /** Destroys every open connection. */
  cutAll(): void;
  /** Stops listening and cuts every connection; idempotent. */
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/** One direction of one connection: applies the current mode to each chunk. */
class Pipe {
  #held: Buffer[] = [];
  /** Bytes were dropped: this connection can never carry on (see the module comment). */
  lost = false;
  #chain: Promise<void> = Promise.resolve();
  constructor(
    readonly to: Socket,
    readonly modeOf: () => FaultMode,
  ) {}

  write(chunk: Buffer): void {
    const mode = this.modeOf();
    switch (mode.kind) {
      case 'blackhole':
        this.lost = true;
        return;
      case 'pause':
        this.#held.push(chunk);
        return;
      case 'pass':
        this.flush();
        if (!this.to.destroyed) this.to.write(chunk);
        return;
      case 'delay':
        this.flush();
        this.#chain = this.#chain.then(
          () =>
            new Promise<void>((resolve) =>
              setTimeout(() => {
                if (!this.to.destroyed) this.to.write(chunk);
                resolve();
              }, mode.ms),
            ),
        );
        return;
    }
  }

  /** Releases held bytes (after a pause ends). */
  flush(): void {
    if (this.#held.length === 0 || this.modeOf().kind === 'pause') return;
    const held = this.#held;
    this.#held = [];
    if (this.modeOf().kind === 'blackhole') {
      this.lost = true;
      return;
    }
    for (const chunk of held) if (!this.to.destroyed) this.to.write(chunk);
  }
}

interface Conn {
  readonly client: Socket;
  readonly server: Socket;
  readonly pipes: readonly Pipe[];
}

/** Starts a proxy in front of `target`; every direction starts in `pass`. */
export async function startFaultProxy(options: FaultProxyOptions): Promise<FaultProxy> {
  const [targetHost, targetPortText] = splitHostPort(options.target);
  const modes: Record<Direction, FaultMode> = { toServer: { kind: 'pass' }, toClient: { kind: 'pass' } };
  const open = new Set<Conn>();
  let accepted = 0;

  const server: Server = createServer({ noDelay: true }, (client) => {
    accepted++;
    const upstream = connect({ host: targetHost, port: Number(targetPortText), noDelay: true });
    const toServer = new Pipe(upstream, () => modes.toServer);
    const toClient = new Pipe(client, () => modes.toClient);
    const conn = { client, server: upstream, pipes: [toServer, toClient] };
    open.add(conn);
    client.on('data', (chunk: Buffer) => toServer.write(chunk));
    upstream.on('data', (chunk: Buffer) => toClient.write(chunk));
    const end = (): void => {
      open.delete(conn);
      client.destroy();
      upstream.destroy();
    };
    client.on('close', end);
    upstream.on('close', end);
    client.on('error', end);
    upstream.on('error', end);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, options.host ?? '127.0.0.1', () => resolve());
  });
  const address = server.address();
  const endpoint =
    typeof address === 'object' && address !== null ? `${address.address}:${address.port}` : String(address);

  const set = (mode: FaultMode, direction?: Direction): void => {
    for (const d of direction === undefined ? (['toServer', 'toClient'] as const) : [direction])
      modes[d] = mode;
    for (const conn of [...open]) {
      // A gap in the stream: reset, as TCP does when it gives up (never deliver what follows a gap).
      if (conn.pipes.some((p) => p.lost && p.modeOf().kind !== 'blackhole')) reset(conn);
      else for (const pipe of conn.pipes) pipe.flush();
    }
  };
  const reset = (conn: Conn): void => {
    conn.client.resetAndDestroy();
    conn.server.resetAndDestroy();
    open.delete(conn);
  };
  const cutAll = (): void => {
    for (const conn of [...open]) reset(conn);
  };
  let closed: Promise<void> | undefined;
  const close = (): Promise<void> => {
    closed ??= new Promise<void>((resolve) => {
      server.close(() => resolve());
      cutAll();
    });
    return closed;
  };
  return {
    endpoint,
    get connections() {
      return open.size;
    },
    get accepted() {
      return accepted;
    },
    set,
    mode: (direction) => modes[direction],
    pass: (direction) => set({ kind: 'pass' }, direction),
    delay: (ms, direction) => set({ kind: 'delay', ms }, direction),
    pause: (direction) => set({ kind: 'pause' }, direction),
    blackhole: (direction) => set({ kind: 'blackhole' }, direction),
    cutAll,
    close,
    [Symbol.asyncDispose]: close,
  };
}

function splitHostPort(endpoint: string): [string, string] {
  const i = endpoint.lastIndexOf(':');
  if (i <= 0) throw new Error(`'${endpoint}' is not host:port`);
  return [endpoint.slice(0, i).replace(/^\[|\]$/g, ''), endpoint.slice(i + 1)];
}
