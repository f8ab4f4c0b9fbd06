/**
 * gRPC for `muster serve` on its own HTTP/2 (h2.ts), in place of `@grpc/grpc-js`'s server and of
 * `node:http2`.
 *
 * Why: profiled under the bench's load, grpc-js's server code (call objects, interceptor chain,
 * metadata, deadline and framing machinery per call) and then Node's HTTP/2 (a stream object per
 * call, trailers a turn after the data) were most of a request's CPU; docs/serve.md ("How a request
 * is served") has the measurements. This layer does per call only what the gRPC protocol needs:
 * - a request is the stream's `:path` (`/etcdserverpb.KV/Range`), `content-type: application/grpc…`
 *   (else HTTP 415) and messages framed as `u8 compressed | u32 length | bytes`; only uncompressed
 *   messages are accepted (etcd's clients compress nothing; a compressed one gets grpc-go's status);
 * - a unary handler runs as soon as its message is whole, in the turn that read it (so requests read
 *   together reach the log's group commit together);
 * - the answer is response headers, the framed message and trailers `grpc-status` / `grpc-message`
 *   (percent-encoded), or for an error a single trailers-only HEADERS frame, as grpc-go sends them;
 * - `grpc-timeout` sets a deadline (DEADLINE_EXCEEDED when it passes), metadata is built only when
 *   a handler reads it (the auth check with credentials on), messages larger than the limit get
 *   RESOURCE_EXHAUSTED, unknown methods UNIMPLEMENTED, undecodable messages INTERNAL — with
 *   grpc-go's messages, since etcd is a grpc-go server.
 *
 * Handlers get the call shapes of call.ts (`request`, `metadata`, for streams an emitter with
 * `write`/`end`, `'data'`/`'end'`/`'cancelled'`/`'drain'`, and `emit('error', status)` to fail), the
 * shapes grpc-js's server gave them, so the gateway can call the same handlers.
 */
import { EventEmitter } from 'node:events';
import type { Duplex } from 'node:stream';
import { createServer as createTlsServer, type Server as TlsServer } from 'node:tls';
import {
  Metadata,
  type ServiceImplementation,
  status,
  type StatusLike,
  type StreamHandler,
  type UnaryHandler,
} from './call.js';
import { H2Connection, type H2Stream } from './h2.js';
import type { ServiceDefinition } from './services.js';

/** One method as the transport serves it. */
interface RpcMethod {
  readonly requestStream: boolean;
  readonly responseStream: boolean;
  readonly decode: (message: Buffer) => unknown;
  /** The response as a gRPC message: the 5-byte prefix, then the protobuf bytes. */
  readonly encode: (value: unknown) => Buffer;
  readonly handler: UnaryHandler | StreamHandler;
}

export interface GrpcTransportOptions {
  /** Largest request message; larger ones get RESOURCE_EXHAUSTED. */
  readonly maxReceiveMessageBytes: number;
  /** PEM certificate chain and key: serve TLS (ALPN `h2`) on a port of its own. */
  readonly tls?: { readonly cert: Buffer; readonly key: Buffer };
}

const GRPC_PREFIX = 5;

/** `grpc-message` is percent-encoded: bytes outside printable ASCII, and `%` itself. */
export function encodeGrpcMessage(text: string): string {
  if (/^[\x20-\x24\x26-\x7e]*$/.test(text)) return text;
  let out = '';
  for (const b of Buffer.from(text, 'utf8')) {
    out +=
      b >= 0x20 && b <= 0x7e && b !== 0x25
        ? String.fromCharCode(b)
        : `%${b.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

/** `grpc-timeout` (`<digits><H|M|S|m|u|n>`) in milliseconds; `undefined` when absent or malformed. */
export function parseGrpcTimeout(value: string | string[] | undefined): number | undefined {
  if (typeof value !== 'string') return undefined;
  const m = /^(\d{1,8})([HMSmun])$/.exec(value);
  if (m === null) return undefined;
  const n = Number(m[1]);
  switch (m[2]) {
    case 'H':
      return n * 3_600_000;
    case 'M':
      return n * 60_000;
    case 'S':
      return n * 1000;
    case 'm':
      return n;
    case 'u':
      return n / 1000;
    default:
      return n / 1_000_000;
  }
}

function codeOf(err: StatusLike): number {
  const code = err.code;
  return typeof code === 'number' && code >= 0 && code <= 16 ? code : status.UNKNOWN;
}

function detailsOf(err: StatusLike): string {
  return err.details ?? err.message ?? '';
}

/**
 * Reads gRPC messages out of DATA chunks: a whole message inside one chunk is handed on as a view of
 * it (no copy); a message split over chunks is gathered into a buffer of its announced length.
 */
class Deframer {
  readonly #max: number;
  /** A prefix split over chunks (rare: allocated when first needed). */
  #head: Buffer | undefined;
  #headFill = 0;
  #body: Buffer | undefined;
  #bodyFill = 0;

  constructor(max: number) {
    this.#max = max;
  }

  /** True while a message has begun and not ended. */
  get partial(): boolean {
    return this.#headFill > 0 || this.#body !== undefined;
  }

  /** Hands every whole message to `emit`; returns the status to end the call with on bad input. */
  push(
    chunk: Buffer,
    encoding: string | undefined,
    emit: (message: Buffer) => void,
  ): [number, string] | undefined {
    let at = 0;
    while (at < chunk.length) {
      if (this.#body !== undefined) {
        const n = chunk.copy(this.#body, this.#bodyFill, at);
        this.#bodyFill += n;
        at += n;
        if (this.#bodyFill === this.#body.length) {
          const body = this.#body;
          this.#body = undefined;
          emit(body);
        }
        continue;
      }
      let flag: number;
      let length: number;
      if (this.#headFill === 0 && chunk.length - at >= GRPC_PREFIX) {
        flag = chunk[at] as number;
        length = chunk.readUInt32BE(at + 1);
        at += GRPC_PREFIX;
      } else {
        const head = (this.#head ??= Buffer.alloc(GRPC_PREFIX));
        const n = chunk.copy(head, this.#headFill, at, at + GRPC_PREFIX - this.#headFill);
        this.#headFill += n;
        at += n;
        if (this.#headFill < GRPC_PREFIX) return undefined;
        this.#headFill = 0;
        flag = head[0] as number;
        length = head.readUInt32BE(1);
      }
      const bad = this.#check(flag, length, encoding);
      if (bad !== undefined) return bad;
      if (chunk.length - at >= length) {
        emit(chunk.subarray(at, at + length));
        at += length;
      } else {
        this.#body = Buffer.allocUnsafe(length);
        this.#bodyFill = 0;
      }
    }
    return undefined;
  }

  #check(flag: number, length: number, encoding: string | undefined): [number, string] | undefined {
    if (flag !== 0) {
      if (encoding === undefined || encoding === 'identity') {
        return [status.INTERNAL, 'grpc: compressed flag set with identity or empty encoding'];
      }
      return [status.UNIMPLEMENTED, `grpc: Decompressor is not installed for grpc-encoding "${encoding}"`];
    }
    if (length > this.#max) {
      return [
        status.RESOURCE_EXHAUSTED,
        `grpc: received message larger than max (${length} vs. ${this.#max})`,
      ];
    }
    return undefined;
  }
}

/** What a unary handler gets. */
class UnaryCall {
  readonly request: unknown;
  readonly #headers: Record<string, string>;
  #metadata: Metadata | undefined;

  constructor(request: unknown, headers: Record<string, string>) {
    this.request = request;
    this.#headers = headers;
  }

  get metadata(): Metadata {
    this.#metadata ??= new Metadata(this.#headers);
    return this.#metadata;
  }
}

/**
 * A streaming call as handlers see it: `'data'` (each request), `'end'` (the client half-closed),
 * `'cancelled'` (the client went away or the deadline passed), `'drain'`; `write(response)`,
 * `end()` (status OK) and `emit('error', status)` (ends the call with that status).
 */
class StreamCall extends EventEmitter {
  request: unknown;
  cancelled = false;
  readonly #stream: H2Stream;
  readonly #encode: (value: unknown) => Buffer;
  #metadata: Metadata | undefined;
  /** The server sent the call's status. */
  #finished = false;

  constructor(stream: H2Stream, encode: (value: unknown) => Buffer) {
    super();
    this.#stream = stream;
    this.#encode = encode;
    this.on('error', (err: StatusLike) => this.finish(codeOf(err), detailsOf(err)));
    stream.onDrain = () => this.emit('drain');
  }

  get metadata(): Metadata {
    this.#metadata ??= new Metadata(this.#stream.headers);
    return this.#metadata;
  }

  /** The call is over: its status was sent, or it was cancelled. */
  get done(): boolean {
    return this.#finished || this.cancelled;
  }

  write(value: unknown): boolean {
    if (this.done) return false;
    return this.#stream.write(this.#encode(value));
  }

  end(): void {
    this.finish(0, '');
  }

  /** Ends the call with a status (once). */
  finish(code: number, details: string): void {
    if (this.done) return;
    this.#finished = true;
    this.#stream.finish(code, encodeGrpcMessage(details));
  }

  /**
   * Tells the handler, once, that the call is over without it: the client went away before the
   * status was sent, or (`force`) the transport ended the call (deadline, bad input).
   */
  cancel(force = false): void {
    if (this.cancelled || (this.#finished && !force)) return;
    this.cancelled = true;
    this.emit('cancelled');
  }
}

/** The methods of the services, by path, each with its handler from `impls` (missing ones are UNIMPLEMENTED). */
export function rpcMethods(
  definitions: Readonly<Record<string, ServiceDefinition>>,
  impls: Readonly<Record<string, ServiceImplementation>>,
): Map<string, RpcMethod> {
  const out = new Map<string, RpcMethod>();
  for (const [service, def] of Object.entries(definitions)) {
    const impl = impls[service] ?? {};
    for (const [name, m] of Object.entries(def)) {
      const handler = impl[name];
      if (handler === undefined) continue;
      out.set(m.path, {
        requestStream: m.requestStream,
        responseStream: m.responseStream,
        decode: m.decode,
        encode: m.encodeFramed,
        handler: handler as unknown as UnaryHandler | StreamHandler,
      });
    }
  }
  return out;
}

/** Serves gRPC calls on the connections handed to it or (TLS) accepted on its own port. */
export class GrpcTransport {
  readonly #methods: ReadonlyMap<string, RpcMethod>;
  readonly #max: number;
  readonly #tls: TlsServer | undefined;
  readonly #connections = new Set<H2Connection>();
  #closing: Promise<void> | undefined;
  /** While closing: called whenever a connection ends. */
  #closed: () => void = () => undefined;

  /** Throws when the TLS certificate or key cannot be used. */
  constructor(methods: ReadonlyMap<string, RpcMethod>, options: GrpcTransportOptions) {
    this.#methods = methods;
    this.#max = options.maxReceiveMessageBytes;
    if (options.tls !== undefined) {
      this.#tls = createTlsServer(
        { cert: options.tls.cert, key: options.tls.key, ALPNProtocols: ['h2'] },
        (socket) => {
          socket.setNoDelay(true);
          this.injectConnection(socket);
        },
      );
      this.#tls.on('tlsClientError', () => undefined);
    }
  }

  /** Serves the HTTP/2 connection on `socket` (its bytes not yet read, or put back with `unshift`). */
  injectConnection(socket: Duplex): void {
    if (this.#closing !== undefined) {
      socket.destroy();
      return;
    }
    const connection: H2Connection = new H2Connection(
      socket,
      (stream) => this.#onStream(stream),
      () => {
        this.#connections.delete(connection);
        this.#closed();
      },
    );
    this.#connections.add(connection);
  }

  /** TLS: listens on `host:port`; resolves to the bound port. */
  listen(host: string, port: number): Promise<number> {
    const server = this.#tls;
    if (server === undefined)
      return Promise.reject(new Error('listen is for TLS; hand plain connections in'));
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        const address = server.address();
        resolve(typeof address === 'object' && address !== null ? address.port : port);
      });
    });
  }

  /**
   * Stops taking calls: every connection gets a GOAWAY and closes once its calls have ended; after
   * `graceMs` the rest are cut. Idempotent.
   */
  close(graceMs: number): Promise<void> {
    this.#closing ??= new Promise<void>((resolve) => {
      if (this.#tls?.listening === true) this.#tls.close();
      const timer = setTimeout(() => {
        for (const c of [...this.#connections]) c.destroy();
      }, graceMs);
      this.#closed = () => {
        if (this.#connections.size > 0) return;
        clearTimeout(timer);
        resolve();
      };
      for (const c of [...this.#connections]) c.close();
      this.#closed();
    });
    return this.#closing;
  }

  #onStream(stream: H2Stream): void {
    const headers = stream.headers;
    const type = headers['content-type'];
    if (type === undefined || !type.startsWith('application/grpc')) {
      stream.rejectMediaType();
      return;
    }
    const path = headers[':path'] ?? '';
    const method = this.#methods.get(path);
    if (method === undefined) {
      const slash = path.lastIndexOf('/');
      stream.finish(
        status.UNIMPLEMENTED,
        encodeGrpcMessage(
          `unknown method ${path.slice(slash + 1)} for service ${path.slice(1, Math.max(1, slash))}`,
        ),
      );
      return;
    }
    const encoding = headers['grpc-encoding'];
    const timeout = parseGrpcTimeout(headers['grpc-timeout']);
    if (method.requestStream || method.responseStream) this.#stream(stream, method, encoding, timeout);
    else this.#unary(stream, method, encoding, timeout);
  }

  #unary(
    stream: H2Stream,
    method: RpcMethod,
    encoding: string | undefined,
    timeout: number | undefined,
  ): void {
    let state: 'reading' | 'running' | 'done' = 'reading';
    let timer: NodeJS.Timeout | undefined;
    const finish = (code: number, details: string): void => {
      if (state === 'done') return;
      state = 'done';
      if (timer !== undefined) clearTimeout(timer);
      stream.finish(code, encodeGrpcMessage(details));
    };
    const callback = (err: StatusLike | null | undefined, value?: unknown): void => {
      if (state === 'done') return;
      if (err !== null && err !== undefined) {
        finish(codeOf(err), detailsOf(err));
        return;
      }
      let frame: Buffer;
      try {
        frame = method.encode(value);
      } catch (e) {
        finish(status.INTERNAL, `grpc: error while marshaling: ${(e as Error).message}`);
        return;
      }
      state = 'done';
      if (timer !== undefined) clearTimeout(timer);
      stream.write(frame);
      stream.finish(0, '');
    };
    const run = (message: Buffer): void => {
      if (state !== 'reading') return;
      state = 'running';
      let request: unknown;
      try {
        request = method.decode(message);
      } catch (e) {
        finish(status.INTERNAL, `grpc: error unmarshalling request: ${(e as Error).message}`);
        return;
      }
      try {
        (method.handler as UnaryHandler)(new UnaryCall(request, stream.headers), callback);
      } catch (e) {
        finish(status.INTERNAL, `muster serve: internal error: ${(e as Error).message}`);
      }
    };
    if (timeout !== undefined) {
      timer = setTimeout(() => finish(status.DEADLINE_EXCEEDED, 'context deadline exceeded'), timeout);
      timer.unref();
    }
    const deframer = new Deframer(this.#max);
    stream.onData = (chunk) => {
      if (state !== 'reading') return;
      const bad = deframer.push(chunk, encoding, run);
      if (bad !== undefined) finish(bad[0], bad[1]);
    };
    stream.onEnd = () => {
      if (state === 'reading') finish(status.INTERNAL, 'grpc: the request ended without a message');
    };
    stream.onReset = () => {
      state = 'done';
      if (timer !== undefined) clearTimeout(timer);
    };
  }

  #stream(
    stream: H2Stream,
    method: RpcMethod,
    encoding: string | undefined,
    timeout: number | undefined,
  ): void {
    const call = new StreamCall(stream, method.encode);
    const handler = method.handler as StreamHandler;
    let started = false;
    let timer: NodeJS.Timeout | undefined;
    const fail = (code: number, details: string): void => {
      if (call.done) return;
      call.finish(code, details);
      call.cancel(true);
    };
    const start = (): void => {
      try {
        handler(call);
      } catch (e) {
        fail(status.INTERNAL, `muster serve: internal error: ${(e as Error).message}`);
      }
    };
    const onMessage = (message: Buffer): void => {
      if (call.done) return;
      let request: unknown;
      try {
        request = method.decode(message);
      } catch (e) {
        fail(status.INTERNAL, `grpc: error unmarshalling request: ${(e as Error).message}`);
        return;
      }
      if (method.requestStream) {
        call.emit('data', request);
        return;
      }
      if (started) return;
      started = true;
      call.request = request;
      start();
    };
    stream.onReset = () => {
      if (timer !== undefined) clearTimeout(timer);
      call.cancel();
    };
    if (timeout !== undefined) {
      timer = setTimeout(() => fail(status.DEADLINE_EXCEEDED, 'context deadline exceeded'), timeout);
      timer.unref();
    }
    if (method.requestStream) {
      started = true;
      start();
    }
    const deframer = new Deframer(this.#max);
    stream.onData = (chunk) => {
      if (call.done) return;
      const bad = deframer.push(chunk, encoding, onMessage);
      if (bad !== undefined) fail(bad[0], bad[1]);
    };
    stream.onEnd = () => {
      if (call.done) return;
      if (!started) fail(status.INTERNAL, 'grpc: the request ended without a message');
      else if (method.requestStream) call.emit('end');
    };
  }
}
