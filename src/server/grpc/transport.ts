/**
 * gRPC over Node's own HTTP/2 (`node:http2`): the transport of `muster serve`, in place of
 * `@grpc/grpc-js`'s server.
 *
 * Why: profiled under the bench's load, grpc-js's server code (call objects, interceptor chain,
 * metadata, deadline and framing machinery per call) cost about as much CPU as the handlers and the
 * engine together, on top of Node's HTTP/2, which any server in Node pays. This transport does per
 * call only what the protocol needs, on the core `node:http2` stream API:
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
 * The handlers are unchanged: they get objects shaped like grpc-js's calls (`request`, `metadata`,
 * for streams an emitter with `write`/`end`, `'data'`/`'end'`/`'cancelled'`/`'drain'`, and
 * `emit('error', status)` to fail), so services, the metrics wrappers and the gateway stay as they
 * were.
 */
import { EventEmitter } from 'node:events';
import {
  createSecureServer,
  createServer,
  type Http2SecureServer,
  type Http2Server,
  type IncomingHttpHeaders,
  type ServerHttp2Session,
  type ServerHttp2Stream,
} from 'node:http2';
import type { Duplex } from 'node:stream';
import { Metadata, status, type ServiceDefinition, type UntypedServiceImplementation } from '@grpc/grpc-js';
import { framedEncoderOf } from './wire.js';

/** A status to end a call with (what handlers pass to callbacks and `emit('error')`). */
interface StatusLike {
  code?: number | undefined;
  details?: string | undefined;
  message?: string | undefined;
}

type UnaryHandler = (
  call: UnaryCall,
  callback: (err: StatusLike | null | undefined, value?: unknown) => void,
) => void;
type StreamHandler = (call: StreamCall) => void;

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

/**
 * Node's per-session memory cap (MB) trips ENHANCE_YOUR_CALM when many large requests are in flight;
 * grpc-js disables it the same way, since the request limit already bounds a message.
 */
const MAX_SESSION_MEMORY_MB = Number.MAX_SAFE_INTEGER;
const GRPC_PREFIX = 5;
const OK_HEADERS = { ':status': 200, 'content-type': 'application/grpc' } as const;
const OK_TRAILERS = { 'grpc-status': '0' } as const;
/** `respond` options: trailers follow; no `date` header (gRPC has no use for it). */
const WITH_TRAILERS = { waitForTrailers: true, sendDate: false } as const;
const HEADERS_ONLY = { endStream: true, sendDate: false } as const;

function sendOkTrailers(this: ServerHttp2Stream): void {
  this.sendTrailers(OK_TRAILERS);
}

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

/** Ends `stream` with a status in one HEADERS frame (gRPC's trailers-only response). */
function trailersOnly(stream: ServerHttp2Stream, code: number, details: string): void {
  if (stream.destroyed || stream.closed || stream.headersSent) return;
  stream.respond(
    {
      ':status': 200,
      'content-type': 'application/grpc',
      'grpc-status': String(code),
      'grpc-message': encodeGrpcMessage(details),
    },
    HEADERS_ONLY,
  );
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

/** What a unary or server-streaming handler gets (the fields of grpc-js's call that handlers read). */
class UnaryCall {
  readonly request: unknown;
  readonly #headers: IncomingHttpHeaders;
  #metadata: Metadata | undefined;

  constructor(request: unknown, headers: IncomingHttpHeaders) {
    this.request = request;
    this.#headers = headers;
  }

  get metadata(): Metadata {
    this.#metadata ??= Metadata.fromHttp2Headers(this.#headers);
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
  readonly #stream: ServerHttp2Stream;
  readonly #headers: IncomingHttpHeaders;
  readonly #encode: (value: unknown) => Buffer;
  #metadata: Metadata | undefined;
  /** The server sent the call's status. */
  #finished = false;
  #trailers: Record<string, string> = OK_TRAILERS;

  constructor(stream: ServerHttp2Stream, headers: IncomingHttpHeaders, encode: (value: unknown) => Buffer) {
    super();
    this.#stream = stream;
    this.#headers = headers;
    this.#encode = encode;
    this.on('error', (err: StatusLike) => this.finish(codeOf(err), detailsOf(err)));
    stream.on('drain', () => this.emit('drain'));
    stream.on('trailers', () => undefined);
    stream.on('wantTrailers', () => stream.sendTrailers(this.#trailers));
  }

  get metadata(): Metadata {
    this.#metadata ??= Metadata.fromHttp2Headers(this.#headers);
    return this.#metadata;
  }

  /** The call is over: its status was sent, or it was cancelled. */
  get done(): boolean {
    return this.#finished || this.cancelled;
  }

  write(value: unknown): boolean {
    const stream = this.#stream;
    if (this.done || stream.destroyed || stream.closed) return false;
    const frame = this.#encode(value);
    if (!stream.headersSent) stream.respond(OK_HEADERS, WITH_TRAILERS);
    return stream.write(frame);
  }

  end(): void {
    this.finish(status.OK, '');
  }

  /** Ends the call with a status (once). */
  finish(code: number, details: string): void {
    if (this.done) return;
    this.#finished = true;
    const stream = this.#stream;
    if (stream.destroyed || stream.closed) return;
    if (!stream.headersSent) {
      trailersOnly(stream, code, details);
      return;
    }
    // 0: OK.
    if (code !== 0) {
      this.#trailers = { 'grpc-status': String(code), 'grpc-message': encodeGrpcMessage(details) };
    }
    stream.end();
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
  impls: Readonly<Record<string, UntypedServiceImplementation>>,
): Map<string, RpcMethod> {
  const out = new Map<string, RpcMethod>();
  for (const [service, def] of Object.entries(definitions)) {
    const impl = impls[service] ?? {};
    for (const [name, m] of Object.entries(def)) {
      const handler = impl[name];
      if (handler === undefined) continue;
      const serialize = m.responseSerialize as (value: unknown) => Buffer;
      out.set(m.path, {
        requestStream: m.requestStream,
        responseStream: m.responseStream,
        decode: m.requestDeserialize as (message: Buffer) => unknown,
        encode: framedEncoderOf(serialize),
        handler: handler as unknown as UnaryHandler | StreamHandler,
      });
    }
  }
  return out;
}

/** The HTTP/2 server that serves gRPC calls; connections are handed to it or (TLS) it listens. */
export class GrpcTransport {
  readonly #methods: ReadonlyMap<string, RpcMethod>;
  readonly #max: number;
  readonly #server: Http2Server | Http2SecureServer;
  readonly #sessions = new Set<ServerHttp2Session>();
  #closing: Promise<void> | undefined;

  /** Throws when the TLS certificate or key cannot be used. */
  constructor(methods: ReadonlyMap<string, RpcMethod>, options: GrpcTransportOptions) {
    this.#methods = methods;
    this.#max = options.maxReceiveMessageBytes;
    const common = { maxSessionMemory: MAX_SESSION_MEMORY_MB };
    this.#server =
      options.tls === undefined
        ? createServer(common)
        : createSecureServer({
            ...common,
            cert: options.tls.cert,
            key: options.tls.key,
            ALPNProtocols: ['h2'],
          });
    this.#server.setTimeout(0);
    this.#server.on('session', (session: ServerHttp2Session) => {
      this.#sessions.add(session);
      session.on('close', () => this.#sessions.delete(session));
    });
    this.#server.on('sessionError', () => undefined);
    this.#server.on('stream', (stream, headers) => this.#onStream(stream, headers));
  }

  /** Serves the HTTP/2 connection on `socket` (its bytes not yet read, or put back with `unshift`). */
  injectConnection(socket: Duplex): void {
    this.#server.emit('connection', socket);
  }

  /** TLS: listens on `host:port`; resolves to the bound port. */
  listen(host: string, port: number): Promise<number> {
    const server = this.#server;
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
      if (this.#server.listening) this.#server.close();
      const sessions = [...this.#sessions];
      if (sessions.length === 0) {
        resolve();
        return;
      }
      let left = sessions.length;
      const timer = setTimeout(() => {
        for (const s of sessions) s.destroy();
      }, graceMs);
      timer.unref();
      for (const s of sessions) {
        const done = (): void => {
          if (--left > 0) return;
          clearTimeout(timer);
          resolve();
        };
        if (s.closed || s.destroyed) done();
        else {
          s.once('close', done);
          s.close();
        }
      }
    });
    return this.#closing;
  }

  #onStream(stream: ServerHttp2Stream, headers: IncomingHttpHeaders): void {
    stream.on('error', () => undefined);
    const type = headers['content-type'];
    if (typeof type !== 'string' || !type.startsWith('application/grpc')) {
      stream.respond({ ':status': 415 }, HEADERS_ONLY);
      return;
    }
    const path = headers[':path'] ?? '';
    const method = this.#methods.get(path);
    if (method === undefined) {
      const slash = path.lastIndexOf('/');
      trailersOnly(
        stream,
        status.UNIMPLEMENTED,
        `unknown method ${path.slice(slash + 1)} for service ${path.slice(1, Math.max(1, slash))}`,
      );
      return;
    }
    const encoding = headers['grpc-encoding'] as string | undefined;
    const timeout = parseGrpcTimeout(headers['grpc-timeout']);
    if (method.requestStream || method.responseStream)
      this.#stream(stream, headers, method, encoding, timeout);
    else this.#unary(stream, headers, method, encoding, timeout);
  }

  #unary(
    stream: ServerHttp2Stream,
    headers: IncomingHttpHeaders,
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
      trailersOnly(stream, code, details);
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
      if (stream.destroyed || stream.closed) return;
      stream.respond(OK_HEADERS, WITH_TRAILERS);
      stream.once('wantTrailers', sendOkTrailers);
      stream.end(frame);
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
        (method.handler as UnaryHandler)(new UnaryCall(request, headers), callback);
      } catch (e) {
        finish(status.INTERNAL, `muster serve: internal error: ${(e as Error).message}`);
      }
    };
    if (timeout !== undefined) {
      timer = setTimeout(() => finish(status.DEADLINE_EXCEEDED, 'context deadline exceeded'), timeout);
      timer.unref();
    }
    const deframer = new Deframer(this.#max);
    stream.on('data', (chunk: Buffer) => {
      if (state !== 'reading') return;
      const bad = deframer.push(chunk, encoding, run);
      if (bad !== undefined) finish(bad[0], bad[1]);
    });
    stream.on('end', () => {
      if (state === 'reading') finish(status.INTERNAL, 'grpc: the request ended without a message');
    });
  }

  #stream(
    stream: ServerHttp2Stream,
    headers: IncomingHttpHeaders,
    method: RpcMethod,
    encoding: string | undefined,
    timeout: number | undefined,
  ): void {
    const call = new StreamCall(stream, headers, method.encode);
    const handler = method.handler as StreamHandler;
    let started = false;
    const fail = (code: number, details: string): void => {
      call.finish(code, details);
      call.cancel(true);
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
    const start = (): void => {
      try {
        handler(call);
      } catch (e) {
        fail(status.INTERNAL, `muster serve: internal error: ${(e as Error).message}`);
      }
    };
    stream.on('close', () => call.cancel());
    if (timeout !== undefined) {
      const timer = setTimeout(() => fail(status.DEADLINE_EXCEEDED, 'context deadline exceeded'), timeout);
      timer.unref();
      stream.on('close', () => clearTimeout(timer));
    }
    if (method.requestStream) {
      started = true;
      start();
    }
    const deframer = new Deframer(this.#max);
    stream.on('data', (chunk: Buffer) => {
      if (call.done) return;
      const bad = deframer.push(chunk, encoding, onMessage);
      if (bad !== undefined) fail(bad[0], bad[1]);
    });
    stream.on('end', () => {
      if (call.done) return;
      if (!started) fail(status.INTERNAL, 'grpc: the request ended without a message');
      else if (method.requestStream) call.emit('end');
    });
  }
}
