/**
 * Closing a proxied WebSocket cleanly: the proxy pipes frames it does not otherwise parse, so to send
 * a close frame of its own it must cut each direction at a frame boundary, never inside a frame.
 * {@link FrameBoundary} follows the frame headers of one direction (RFC 6455 §5.2: 2 bytes, a 16- or
 * 64-bit length, a 4-byte mask key) to know where frames end; {@link closeFrame} builds the close
 * frame (§5.5.1) with a status code.
 */
import { randomFillSync } from 'node:crypto';
import type { Duplex } from 'node:stream';
import type { Clock } from '../clock.js';

/** 1012 "Service Restart" (IANA registry): the proxy is reloading or the key's owner moved; reconnect. */
export const WS_SERVICE_RESTART = 1012;
/** 1001 "Going Away": what the proxy tells the backend when it closes a client's WebSocket. */
export const WS_GOING_AWAY = 1001;

/** Follows the frame boundaries of one direction of a WebSocket connection. */
export class FrameBoundary {
  /** Bytes of the current frame still to come (header read). */
  #left = 0;
  /** A frame header cut by a chunk end. */
  #partial: Buffer | undefined;

  /** True between two frames. */
  get atBoundary(): boolean {
    return this.#left === 0 && this.#partial === undefined;
  }

  /**
   * Consumes `chunk` (bytes as they are forwarded). With `stopAtBoundary`, returns the offset of the
   * first frame boundary within the chunk (0 when at one already; the bytes after it are not
   * consumed), or -1 when the chunk ends inside a frame. Without, returns -1 after consuming it all.
   */
  feed(chunk: Buffer, stopAtBoundary = false): number {
    let data = chunk;
    let base = 0;
    if (this.#partial !== undefined) {
      base = -this.#partial.length;
      data = Buffer.concat([this.#partial, chunk]);
      this.#partial = undefined;
    }
    let i = 0;
    while (i < data.length) {
      if (this.#left > 0) {
        const take = Math.min(this.#left, data.length - i);
        this.#left -= take;
        i += take;
        continue;
      }
      if (stopAtBoundary && i + base >= 0) return i + base;
      const header = headerLength(data, i);
      if (header === undefined) {
        this.#partial = Buffer.from(data.subarray(i));
        return -1;
      }
      this.#left = header.length + header.payload;
    }
    return stopAtBoundary && this.atBoundary ? data.length + base : -1;
  }
}

/** The header length and payload length of the frame at `i`, or undefined if the header is cut. */
function headerLength(data: Buffer, i: number): { length: number; payload: number } | undefined {
  if (data.length - i < 2) return undefined;
  const b1 = data[i + 1] as number;
  const masked = (b1 & 0x80) !== 0 ? 4 : 0;
  const len7 = b1 & 0x7f;
  const ext = len7 === 126 ? 2 : len7 === 127 ? 8 : 0;
  if (data.length - i < 2 + ext) return undefined;
  const payload =
    len7 === 126 ? data.readUInt16BE(i + 2) : len7 === 127 ? Number(data.readBigUInt64BE(i + 2)) : len7;
  return { length: 2 + ext + masked, payload };
}

/** A close frame with `code`; `masked` for frames a client sends (to the backend). */
export function closeFrame(code: number, masked: boolean): Buffer {
  const payload = Buffer.alloc(2);
  payload.writeUInt16BE(code);
  if (!masked) return Buffer.concat([Buffer.from([0x88, payload.length]), payload]);
  const key = randomFillSync(Buffer.alloc(4));
  for (let i = 0; i < payload.length; i++) payload[i] = (payload[i] as number) ^ (key[i % 4] as number);
  return Buffer.concat([Buffer.from([0x88, 0x80 | payload.length]), key, payload]);
}

/** 5 s: how long a closing WebSocket may take to reach a frame boundary before it is cut. */
export const WS_CLOSE_GRACE_MS = 5_000;

/** A proxied WebSocket that can be closed with a code of the proxy's own. */
export interface WsTunnel {
  /**
   * Sends the client a close frame with `code` and the backend one with 1001, each at the next frame
   * boundary of its direction, then ends both; cuts them after {@link WS_CLOSE_GRACE_MS}. Idempotent.
   */
  close(code: number): void;
}

/**
 * Pipes `client` ⇄ `upstream` once the backend has switched protocols. The caller has written the
 * upgrade request upstream; `head` holds the client's bytes after its request head. The backend's
 * response head (until the blank line) is passed to the client first, and nothing of the client's
 * goes upstream before it: only a `101` opens the tunnel (then `head`, then the client's bytes, with
 * back-pressure both ways). Any other answer is passed to the client, the upstream write side is ended
 * (the backend closes after its answer) and the client's connection ends with the upstream's, its
 * further bytes unread — so a refused upgrade cannot carry requests past the proxy's routing.
 * With `frames` (a WebSocket), frame boundaries are followed both ways for {@link WsTunnel.close}.
 */
export function tunnelWebSocket(
  client: Duplex,
  upstream: Duplex,
  head: Buffer,
  clock: Pick<Clock, 'setTimeout' | 'clearTimeout'>,
  frames = true,
): WsTunnel {
  const down = new FrameBoundary();
  const up = new FrameBoundary();
  let responseHead: 'reading' | 'ws' | 'other' = 'reading';
  let seen = '';
  let closing: number | undefined;
  let downClosed = false;
  let upClosed = false;

  const forward = (from: Duplex, to: Duplex, chunk: Buffer): void => {
    if (!to.write(chunk)) {
      from.pause();
      to.once('drain', () => from.resume());
    }
  };
  const closeDown = (): void => {
    if (downClosed) return;
    downClosed = true;
    upstream.off('data', onUpstream);
    client.end(closeFrame(closing ?? WS_SERVICE_RESTART, false));
  };
  const closeUp = (): void => {
    if (upClosed) return;
    upClosed = true;
    client.off('data', onClient);
    upstream.end(closeFrame(WS_GOING_AWAY, true));
  };
  /** The backend switched: the client's bytes may flow now. */
  const open = (): void => {
    if (frames) up.feed(head);
    if (head.length > 0) upstream.write(head);
    client.on('data', onClient);
    client.on('end', () => upstream.end());
    client.resume();
  };
  const onUpstream = (chunk: Buffer): void => {
    let body = chunk;
    if (responseHead === 'reading') {
      const text = seen + chunk.toString('latin1');
      const end = text.indexOf('\r\n\r\n');
      if (end < 0) {
        seen = text.slice(-3);
        forward(upstream, client, chunk);
        return;
      }
      responseHead = /^HTTP\/1\.[01] 101/.test(text) ? 'ws' : 'other';
      const at = end + 4 - seen.length;
      forward(upstream, client, chunk.subarray(0, at));
      body = chunk.subarray(at);
      if (closing !== undefined) {
        if (responseHead === 'ws') closeDown();
        else cut();
        return;
      }
      if (responseHead === 'ws') open();
      else upstream.end();
    }
    if (!frames || responseHead !== 'ws' || closing === undefined) {
      if (frames && responseHead === 'ws') down.feed(body);
      if (body.length > 0) forward(upstream, client, body);
      return;
    }
    const k = down.feed(body, true);
    if (k < 0) {
      forward(upstream, client, body);
      return;
    }
    if (k > 0) client.write(body.subarray(0, k));
    closeDown();
  };
  const onClient = (chunk: Buffer): void => {
    if (!frames || closing === undefined) {
      if (frames) up.feed(chunk);
      forward(client, upstream, chunk);
      return;
    }
    const k = up.feed(chunk, true);
    if (k < 0) {
      forward(client, upstream, chunk);
      return;
    }
    if (k > 0) upstream.write(chunk.subarray(0, k));
    closeUp();
  };
  const cut = (): void => {
    client.destroy();
    upstream.destroy();
  };

  upstream.on('data', onUpstream);
  upstream.on('end', () => client.end());

  return {
    close(code) {
      if (closing !== undefined) return;
      closing = code;
      if (responseHead !== 'ws' || !frames) return cut();
      if (down.atBoundary) closeDown();
      if (up.atBoundary) closeUp();
      const timer = clock.setTimeout(cut, WS_CLOSE_GRACE_MS);
      client.once('close', () => clock.clearTimeout(timer));
    },
  };
}
