/**
 * The client side's request parser: Node's own llhttp binding (the `HTTPParser` node:http runs on,
 * reached through `_http_common`), in strict mode, plus the few RFC 9112 rules llhttp leaves to its
 * caller. Why llhttp and not a parser of our own: it is what every Node HTTP server already trusts
 * against request smuggling (CL+TE, duplicate or invalid `Content-Length`, bad chunk sizes, bare LF,
 * obs-fold, whitespace before the colon), it decodes chunked bodies in C, and it parsed a request head
 * in 1–2 µs where the hand-written one took 2.6–9 µs (A/B in one process, docs/dependencies.md). What
 * this file adds on top of llhttp's strict mode (each refused with 400):
 *
 * - a version other than HTTP/1.0 or HTTP/1.1;
 * - more than one `Host` (RFC 9112 §3.2);
 * - `Transfer-Encoding` in an HTTP/1.0 request (§6.1);
 * - more than `MAX_HEADER_PAIRS` field lines.
 *
 * A head over `maxHeaderSize` is 431. The parser is fed the connection's bytes as they arrive and calls
 * its handler per request head, body piece and request end; pipelined requests are parsed as they come
 * (the connection queues them).
 */
import { createRequire } from 'node:module';

/** 2,000 field lines, node:http's `maxHeadersCount` default; more is refused. */
export const MAX_HEADER_PAIRS = 2000;

interface LlhttpParser {
  initialize(type: number, resource: object, maxHeaderSize: number, lenient: number): void;
  execute(data: Buffer): number | (Error & { code?: string; reason?: string; bytesParsed?: number });
  finish(): unknown;
  close(): void;
  [slot: number]: unknown;
}

interface LlhttpBinding {
  new (): LlhttpParser;
  readonly REQUEST: number;
  readonly kOnHeaders: number;
  readonly kOnHeadersComplete: number;
  readonly kOnBody: number;
  readonly kOnMessageComplete: number;
  readonly kOnExecute: number;
  readonly kLenientNone: number;
}

const common = createRequire(import.meta.url)('_http_common') as {
  HTTPParser: LlhttpBinding;
  methods: string[];
};
const HTTPParser = common.HTTPParser;
const METHODS = common.methods;
if (typeof HTTPParser !== 'function' || typeof HTTPParser.kOnHeadersComplete !== 'number')
  throw new Error("this Node.js has no llhttp binding in '_http_common' (the proxy needs Node 20 or 22)");

/** One request head, as parsed. */
export interface ClientRequest {
  readonly method: string;
  /** The request target as sent. */
  readonly url: string;
  /** 0 for HTTP/1.0, 1 for HTTP/1.1. */
  readonly minor: number;
  /** The field lines as sent: name, value, name, value… (like node's `rawHeaders`). */
  readonly rawHeaders: string[];
  /** The field names of `rawHeaders` lower-cased, in order (`names[i]` is `rawHeaders[2 * i]`'s). */
  readonly names: string[];
  /** Lower-cased names; repeated fields joined with `, ` (`cookie` with `; `). */
  readonly headers: Record<string, string>;
  /** The connection may carry another request after this one (llhttp's keep-alive rule). */
  readonly keepAlive: boolean;
  /** An `Upgrade` (or CONNECT): the bytes after the head belong to the tunnel. */
  readonly upgrade: boolean;
  readonly expectContinue: boolean;
  /** A body follows (`Content-Length` > 0, or chunked). */
  readonly hasBody: boolean;
  /** The body came chunked (it goes upstream re-framed as chunked). */
  readonly chunked: boolean;
}

/** What the parser calls; `this`-free so one handler object serves a connection. */
export interface RequestParserHandler {
  /** A request head. */
  request(req: ClientRequest): void;
  /** A piece of the (decoded) body of the request last given to {@link request}. */
  body(chunk: Buffer): void;
  /** The request last given to {@link request} is complete. */
  complete(): void;
}

/** A refusal: answer this status with this reason, then close. */
export interface Refusal {
  readonly status: 400 | 417 | 431;
  readonly reason: string;
}

/** The result of feeding bytes: all consumed, a refusal, or an upgrade whose tunnel starts at `rest`. */
export type FeedResult = undefined | Refusal | { readonly upgrade: Buffer };

const EMPTY: string[] = [];

/** A parser for one connection. */
export class RequestParser {
  readonly #parser: LlhttpParser;
  readonly #handler: RequestParserHandler;
  #refusal: Refusal | undefined;
  #upgraded = false;
  /** The last request closes the connection: later bytes are dropped unread. */
  #ignoring = false;
  /** Field lines flushed by llhttp before the head ended (more than 32, node's batching). */
  #partial: string[] = EMPTY;
  #partialUrl = '';
  #closed = false;
  /**
   * llhttp's message-complete callback, set only while a request with a body is parsed: a request
   * without one is complete with its head (told then), which saves a call from C++ into JS per request
   * (the binding skips a slot that holds no function).
   */
  readonly #onComplete: () => void;
  #completeSet = true;

  constructor(maxHeaderSize: number, handler: RequestParserHandler) {
    this.#handler = handler;
    const p = new HTTPParser();
    this.#parser = p;
    p[HTTPParser.kOnHeaders] = (headers: string[], url: string): void => {
      if (this.#partial === EMPTY) this.#partial = [];
      for (const h of headers) this.#partial.push(h);
      this.#partialUrl += url;
    };
    p[HTTPParser.kOnHeadersComplete] = (
      major: number,
      minor: number,
      headers: string[] | undefined,
      method: number,
      url: string | undefined,
      _status: unknown,
      _message: unknown,
      upgrade: boolean,
      keepAlive: boolean,
    ): number => this.#head(major, minor, headers, method, url, upgrade, keepAlive);
    p[HTTPParser.kOnBody] = (chunk: Buffer): void => {
      if (this.#refusal === undefined) this.#handler.body(chunk);
    };
    this.#onComplete = (): void => {
      if (this.#refusal === undefined && !this.#upgraded) this.#handler.complete();
    };
    p[HTTPParser.kOnMessageComplete] = this.#onComplete;
    p[HTTPParser.kOnExecute] = (): void => undefined;
    p.initialize(HTTPParser.REQUEST, {}, maxHeaderSize, HTTPParser.kLenientNone);
  }

  /** Parses `d` (synchronously calling the handler). */
  feed(d: Buffer): FeedResult {
    if (this.#refusal !== undefined) return this.#refusal;
    if (this.#ignoring) return undefined;
    const r = this.#parser.execute(d);
    if (this.#refusal !== undefined) return this.#refusal;
    if (typeof r !== 'number') {
      // bytes after a request that closes the connection (`Connection: close`, HTTP/1.0): that
      // request stands, the connection ends with its answer, and the rest is not read
      if (r.code === 'HPE_CLOSED_CONNECTION') {
        this.#ignoring = true;
        return undefined;
      }
      this.#refusal =
        r.code === 'HPE_HEADER_OVERFLOW'
          ? { status: 431, reason: 'the request head is too large' }
          : { status: 400, reason: `a malformed request: ${r.reason ?? r.code ?? 'parse error'}` };
      return this.#refusal;
    }
    if (this.#upgraded) return { upgrade: d.subarray(r) };
    return undefined;
  }

  /** Frees the native parser. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#parser.close();
  }

  #head(
    major: number,
    minor: number,
    given: string[] | undefined,
    methodIndex: number,
    givenUrl: string | undefined,
    upgrade: boolean,
    keepAlive: boolean,
  ): number {
    if (this.#refusal !== undefined) return 1;
    let raw = given;
    let url = givenUrl ?? '';
    if (this.#partial !== EMPTY) {
      raw = this.#partial;
      if (given !== undefined) for (const h of given) raw.push(h);
      url = this.#partialUrl + url;
      this.#partial = EMPTY;
      this.#partialUrl = '';
    }
    raw ??= [];
    if (major !== 1 || minor > 1) return this.#refuse('an unsupported HTTP version');
    if (raw.length > MAX_HEADER_PAIRS * 2) return this.#refuse('too many header fields');
    const headers: Record<string, string> = {};
    const names = new Array<string>(raw.length >> 1);
    let hosts = 0;
    let te = false;
    let length = false;
    for (let i = 0; i < raw.length; i += 2) {
      const lower = (raw[i] as string).toLowerCase();
      names[i >> 1] = lower;
      const value = raw[i + 1] as string;
      if (lower === 'host') hosts++;
      else if (lower === 'transfer-encoding') te = true;
      else if (lower === 'content-length') length = !/^\s*0+\s*$/.test(value);
      const had = headers[lower];
      headers[lower] = had === undefined ? value : `${had}${lower === 'cookie' ? '; ' : ', '}${value}`;
    }
    if (hosts > 1) return this.#refuse('more than one Host');
    // RFC 9112 §3.2: an HTTP/1.1 request without Host is answered 400
    if (hosts === 0 && minor === 1) return this.#refuse('an HTTP/1.1 request without Host');
    if (te && minor === 0) return this.#refuse('Transfer-Encoding in an HTTP/1.0 request');
    const method = METHODS[methodIndex] ?? 'GET';
    // Expect (RFC 9110 §10.1.1): 100-continue is the one expectation; in an HTTP/1.0 request it is
    // ignored (no 1xx to a 1.0 client); any other expectation cannot be met: 417, before any body.
    const expect = minor === 1 ? headers['expect']?.trim().toLowerCase() : undefined;
    if (expect !== undefined && expect !== '100-continue')
      return this.#refuse(
        `the expectation ${JSON.stringify(headers['expect'])} cannot be met (only 100-continue)`,
        417,
      );
    this.#upgraded = upgrade;
    const hasBody = te || length;
    // no body: llhttp completes the message right after the head (Content-Length absent or 0)
    const whole = !hasBody && !upgrade;
    if (whole === this.#completeSet) {
      this.#completeSet = !whole;
      this.#parser[HTTPParser.kOnMessageComplete] = whole ? undefined : this.#onComplete;
    }
    this.#handler.request({
      method,
      url,
      minor,
      rawHeaders: raw,
      names,
      headers,
      keepAlive,
      upgrade,
      expectContinue: expect === '100-continue',
      hasBody,
      chunked: te,
    });
    if (whole) this.#handler.complete();
    return upgrade ? 2 : 0; // 2: no body, stop after the head (the rest is the tunnel's)
  }

  #refuse(reason: string, status: 400 | 417 = 400): number {
    this.#refusal = { status, reason };
    return 1; // no body: the connection is closed after the answer anyway
  }
}
