/**
 * The response framer: reads an upstream HTTP/1.1 response off a byte stream (RFC 9112) — the status
 * line and header fields, then the body framed by its length (§6.3: no body for HEAD, 1xx, 204 and 304;
 * `Transfer-Encoding: chunked`, decoded; `Content-Length`; else until the connection closes) — and hands
 * the head and the decoded body bytes to a sink. Interim 1xx responses (other than 101) are skipped.
 * Anything malformed throws an {@link UpstreamError} `UPSTREAM_BAD_RESPONSE`: the connection is not
 * reused.
 */
import { ChunkedDecoder } from './chunked.js';
import { HOP_BY_HOP, listed } from './headers.js';
import { UpstreamError } from './upstream-error.js';

/** 64 KiB of response head: more than any backend sends (Node's own default limit is 16 KiB). */
export const MAX_RESPONSE_HEAD_BYTES = 64 * 1024;

const CRLFCRLF = Buffer.from('\r\n\r\n');
/** A control character other than HTAB, CR and LF (bare CRs and LFs are found line by line). */
const BAD_HEAD_CHAR = /[^\t\r\n\x20-\x7e\x80-\xff]/;
/** A field name (a token, RFC 9110 §5.6.2) and its colon, matched where a field line starts. */
const NAME = /[!#$%&'*+.^_`|~0-9A-Za-z-]+:/y;
/** Bit n set: a field name of n characters may be Content-Length or a hop-by-hop one (only those are lower-cased). */
const SPECIAL_LENGTHS = ['content-length', ...HOP_BY_HOP].reduce(
  (bits, name) => bits | (1 << name.length),
  0,
);

/**
 * A response's status line and header fields, read for the client: `fields` are the backend's field
 * lines as sent (each ending in CRLF) without the hop-by-hop ones (RFC 9110 §7.6.1, and those its
 * `Connection` field lists) and without `Content-Length`, which is in `length`.
 */
export interface ResponseHead {
  readonly status: number;
  readonly statusText: string;
  readonly fields: string;
  /** The body's `Content-Length` (not with `Transfer-Encoding`, which overrides it). */
  readonly length: number | undefined;
  /** False when the connection cannot carry another request after this response. */
  readonly keepAlive: boolean;
  /** The backend's `Keep-Alive: timeout=N` in ms, if it sent one. */
  readonly keepAliveMs: number | undefined;
}

export interface ResponseSink {
  head(head: ResponseHead): void;
  /** A piece of the body: valid during the call only (a view of the connection's read buffer). */
  data(chunk: Buffer): void;
  /** The response is complete; `clean`: no bytes followed it (else the connection's framing is lost). */
  end(clean: boolean): void;
}

/** The framer's states (numbers: compared on every byte run). */
const State = {
  Idle: 0,
  Head: 1,
  Length: 2,
  Chunked: 3,
  UntilClose: 4,
} as const;
type State = (typeof State)[keyof typeof State];

export class ResponseFramer {
  #state: State = State.Idle;
  #sink: ResponseSink | undefined;
  #noBody = false;
  #buf: Buffer | undefined;
  #left = 0;
  readonly #chunked = new ChunkedDecoder(bad);

  /** True while a response is being read. */
  get busy(): boolean {
    return this.#state !== State.Idle;
  }

  /** True when the body runs until the connection closes (an end of stream is its end). */
  get untilClose(): boolean {
    return this.#state === State.UntilClose;
  }

  /** True when nothing of the response has arrived yet. */
  get waitingForHead(): boolean {
    return this.#state === State.Head;
  }

  /** Expects the next response; `noBody` for a response to HEAD. */
  start(sink: ResponseSink, noBody: boolean): void {
    this.#sink = sink;
    this.#noBody = noBody;
    this.#state = State.Head;
  }

  /** The end of the stream: completes a close-delimited body; false if the response was cut short. */
  closed(): boolean {
    if (this.#state !== State.UntilClose) return this.#state === State.Idle;
    const sink = this.#sink;
    this.#state = State.Idle;
    this.#sink = undefined;
    sink?.end(false);
    return true;
  }

  /** Feeds bytes (the sink's `end` comes after all of them were read). Throws `UPSTREAM_BAD_RESPONSE`. */
  feed(d: Buffer): void {
    const rest = this.#run(d);
    const sink = this.#ended;
    if (sink === undefined) return;
    this.#ended = undefined;
    sink.end(rest === undefined || rest.length === 0);
  }

  #ended: ResponseSink | undefined;

  #run(d: Buffer): Buffer | undefined {
    let i = 0;
    while (i < d.length) {
      switch (this.#state) {
        case State.Idle:
          return d.subarray(i);
        case State.Head: {
          const held = this.#buf;
          if (held === undefined) {
            // the common case: the whole head in this read — parsed in place, no copy
            const end = d.indexOf(CRLFCRLF, i);
            if (end < 0) {
              if (d.length - i > MAX_RESPONSE_HEAD_BYTES) throw bad('the response head is too large');
              this.#buf = Buffer.from(d.subarray(i)); // `d` may be a shared read buffer
              return undefined;
            }
            this.#head(d.toString('latin1', i, end));
            i = end + 4;
          } else {
            const buf = Buffer.concat([held, d.subarray(i)]);
            const end = buf.indexOf(CRLFCRLF);
            if (end < 0) {
              if (buf.length > MAX_RESPONSE_HEAD_BYTES) throw bad('the response head is too large');
              this.#buf = buf;
              return undefined;
            }
            this.#buf = undefined;
            this.#head(buf.toString('latin1', 0, end));
            d = buf;
            i = end + 4;
          }
          if (this.#left === 0 && (this.#state as State) === State.Length) this.#finish();
          break;
        }
        case State.Length: {
          const take = Math.min(this.#left, d.length - i);
          this.#left -= take;
          const chunk = take === d.length && i === 0 ? d : d.subarray(i, i + take);
          i += take;
          this.#sink?.data(chunk);
          if (this.#left === 0) this.#finish();
          break;
        }
        case State.UntilClose:
          this.#sink?.data(i === 0 ? d : d.subarray(i));
          return undefined;
        default: {
          const sink = this.#sink;
          const end = this.#chunked.decode(d, i, (chunk) => sink?.data(chunk));
          if (end < 0) return undefined;
          i = end;
          this.#finish();
        }
      }
    }
    return undefined;
  }

  /**
   * The last final response head this connection read, as text, and what was read from it: a
   * backend's responses on one connection mostly repeat their head byte for byte (the `Date` field
   * changes once a second), and the same text parses to the same result, so it is not parsed again.
   */
  #lastText = '';
  #last: ParsedHead | undefined;

  #head(text: string): void {
    let parsed = this.#last;
    if (parsed === undefined || text !== this.#lastText) {
      parsed = parseHead(text);
      if (parsed === undefined) {
        this.#state = State.Head; // an interim response (103 Early Hints…): the real one follows
        return;
      }
      if (text.length <= MAX_CACHED_HEAD_CHARS) {
        this.#lastText = text;
        this.#last = parsed;
      }
    }
    let head = parsed.head;
    if (this.#noBody) {
      // a response to HEAD: no body whatever its fields say, kept alive as they say, its Content-Length as sent
      head = parsed.noBodyHead ??=
        parsed.untilClose || (parsed.te && parsed.length >= 0)
          ? {
              ...head,
              length: parsed.length < 0 ? undefined : parsed.length,
              keepAlive: parsed.keepAlive,
            }
          : head;
      this.#state = State.Length;
      this.#left = 0;
    } else if (head.status === 204 || head.status === 304) {
      this.#state = State.Length;
      this.#left = 0;
    } else if (parsed.untilClose) this.#state = State.UntilClose;
    else if (parsed.te) {
      this.#state = State.Chunked;
      this.#chunked.reset();
    } else {
      this.#state = State.Length;
      this.#left = parsed.length;
    }
    this.#sink?.head(head);
  }

  /** The response is read: its sink is told when the bytes fed with it have been looked at. */
  #finish(): void {
    this.#ended = this.#sink;
    this.#state = State.Idle;
    this.#sink = undefined;
  }
}

/** Heads up to 4 KiB are remembered for the next response (a few per upstream connection). */
const MAX_CACHED_HEAD_CHARS = 4096;

/** What a final response head says (the same for the same text). */
interface ParsedHead {
  /** For the sink, when the request was not HEAD. */
  readonly head: ResponseHead;
  /** `Transfer-Encoding` was sent (it overrides `Content-Length`)… */
  readonly te: boolean;
  /** …and its last coding is chunked. */
  readonly chunked: boolean;
  /** The body runs until the connection closes (when the request was not HEAD). */
  readonly untilClose: boolean;
  /** `Content-Length` as sent (-1: none). */
  readonly length: number;
  /** What the `Connection` field says. */
  readonly keepAlive: boolean;
  /** For the sink when the request was HEAD (made when first needed). */
  noBodyHead: ResponseHead | undefined;
}

/**
 * Parses a response head (the text before its blank line); `undefined` for an interim (1xx) response.
 * Throws `UPSTREAM_BAD_RESPONSE`.
 */
function parseHead(text: string): ParsedHead | undefined {
  const n = text.length;
  if (BAD_HEAD_CHAR.test(text)) throw bad('a control character in the head');
  const eol = text.indexOf('\r\n');
  if (!crlfOnly(text, 0, eol)) throw bad('a bare CR or LF in the head');
  // `HTTP/1.x NNN[ reason]`, checked by character (a regex match allocated an array and 4 strings)
  const lineEnd = eol < 0 ? n : eol;
  const minor = text.charCodeAt(7) - 48;
  const status = digit(text, 9) * 100 + digit(text, 10) * 10 + digit(text, 11);
  if (
    !text.startsWith('HTTP/1.') ||
    (minor !== 0 && minor !== 1) ||
    text.charCodeAt(8) !== 32 ||
    !(status >= 0) ||
    (lineEnd !== 12 && (lineEnd < 12 || text.charCodeAt(12) !== 32))
  )
    throw bad(`an invalid status line ${JSON.stringify(text.slice(0, Math.min(lineEnd, 40)))}`);
  const statusText = lineEnd > 13 ? text.slice(13, lineEnd) : '';
  // the kept field lines are sliced off `text` by runs of adjacent lines, not line by line
  let fields = '';
  let run = -1;
  let length = -1;
  let chunked = false;
  let te = false;
  let connection = '';
  let keepAliveMs: number | undefined;
  let pos = eol < 0 ? n : eol + 2;
  while (pos < n) {
    let next = text.indexOf('\r\n', pos);
    if (!crlfOnly(text, pos, next)) throw bad('a bare CR or LF in the head');
    if (next < 0) next = n;
    NAME.lastIndex = pos;
    const colon = NAME.test(text) ? NAME.lastIndex - 1 : -1;
    if (colon < 0 || colon > next) {
      const c = text.indexOf(':', pos);
      throw bad(c <= pos || c > next ? 'a header line without a name' : 'an invalid header name');
    }
    // only names as long as a framing or hop-by-hop one are lower-cased and looked at
    const len = colon - pos;
    const special = len < 32 && ((SPECIAL_LENGTHS >>> len) & 1) === 1;
    const lower = special ? text.slice(pos, colon).toLowerCase() : '';
    if (lower === 'content-length') {
      const value = text.slice(colon + 1, next).trim();
      if (!/^\d{1,15}$/.test(value) || (length !== -1 && length !== Number(value)))
        throw bad('an invalid Content-Length');
      length = Number(value);
    } else if (special && HOP_BY_HOP.has(lower)) {
      const value = text.slice(colon + 1, next).trim();
      if (lower === 'transfer-encoding') {
        te = true;
        chunked = /(?:^|,)\s*chunked\s*$/i.test(value);
      } else if (lower === 'connection') connection += `${value.toLowerCase()},`;
      else if (lower === 'keep-alive') {
        const t = /timeout=(\d+)/i.exec(value);
        if (t !== null) keepAliveMs = Number(t[1]) * 1000;
      }
    } else {
      if (run < 0) run = pos;
      pos = next + 2;
      continue;
    }
    if (run >= 0) {
      fields += text.slice(run, pos);
      run = -1;
    }
    pos = next + 2;
  }
  if (run >= 0) fields += `${text.slice(run, n)}\r\n`;
  if (status < 100) throw bad(`the status ${status} (below 100)`);
  if (status < 200 && status !== 101) return undefined;
  if (status === 101) throw bad('101 Switching Protocols to a request that asked for no upgrade');
  const http10 = minor === 0;
  let keepAlive = true;
  if (connection !== 'keep-alive,') {
    // (`keep-alive,` alone: the common case)
    if (connection !== '' && !/^(?:\s*(?:keep-alive|close)\s*,)+$/.test(connection))
      fields = withoutListed(fields, listed(connection));
    keepAlive = http10
      ? /(?:^|[\s,])keep-alive(?:,|$)/.test(connection)
      : !/(?:^|[\s,])close,/.test(connection);
  }
  const bodyless = status === 204 || status === 304;
  // §6.3: Transfer-Encoding overrides Content-Length (except where there is no body: 204, 304); a
  // coding other than chunked, or neither field, runs until the connection closes (not kept alive)
  const untilClose = !bodyless && (te ? !chunked : length < 0);
  return {
    head: {
      status,
      statusText,
      fields,
      length: length < 0 || (te && !bodyless) ? undefined : length,
      keepAlive: keepAlive && !untilClose,
      keepAliveMs,
    },
    te,
    chunked,
    untilClose,
    length,
    keepAlive,
    noBodyHead: undefined,
  };
}

function bad(why: string): UpstreamError {
  return new UpstreamError('UPSTREAM_BAD_RESPONSE', `the backend's response is malformed: ${why}`);
}

/** `fields` without the lines whose (lower-cased) name is in `names` (a `Connection` field's list). */
function withoutListed(fields: string, names: Set<string>): string {
  let out = '';
  for (const line of fields.split('\r\n')) {
    if (line === '') continue;
    if (!names.has(line.slice(0, line.indexOf(':')).toLowerCase())) out += `${line}\r\n`;
  }
  return out;
}

/** True when the line from `pos` has no CR or LF before its end at `crlf` (-1: the last line). */
function crlfOnly(text: string, pos: number, crlf: number): boolean {
  const cr = text.indexOf('\r', pos);
  const lf = text.indexOf('\n', pos);
  return crlf < 0 ? cr < 0 && lf < 0 : cr === crlf && lf === crlf + 1;
}

/** The decimal digit at `i`, or NaN. */
function digit(text: string, i: number): number {
  const c = text.charCodeAt(i) - 48;
  return c >= 0 && c <= 9 ? c : NaN;
}
