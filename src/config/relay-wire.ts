/** The relay's wire format: newline-delimited JSON, values in base64. */
import type { KeyValue, WatchEvent } from '../store/index.js';

export interface WireKv {
  readonly k: string;
  /** base64 */
  readonly v: string;
  readonly c: number;
  readonly m: number;
  readonly ver: number;
  readonly l: string;
}
export interface WireEvent {
  readonly t: 'put' | 'delete';
  readonly kv: WireKv;
}

/** Client → relay. */
export type ClientMessage =
  | { readonly op: 'range'; readonly id: number; readonly prefix: string; readonly keysOnly?: boolean }
  | { readonly op: 'head'; readonly id: number }
  | {
      readonly op: 'watch';
      readonly wid: number;
      readonly prefix: string;
      readonly from: number;
      /** Ask the relay for a proof of completeness at least this often (ms). */
      readonly every?: number;
      /** The client reads the prefix's shared table: no proofs on the socket. */
      readonly table?: boolean;
    }
  | { readonly op: 'progress'; readonly wid: number }
  | { readonly op: 'unwatch'; readonly wid: number };

/**
 * Relay → client. `hello` comes first on every connection: the relay's boot id and host-monotonic
 * instant, so the client can tell whether the two share a clock, and the directory of its shared
 * tables (null: none). `proof`: every event of watch `wid`
 * up to revision `proof` has been sent, and the relay's mirror was proven complete `age` ms before
 * host-monotonic instant `mono`, when this line was written.
 */
export type RelayMessage =
  | {
      readonly hello: {
        readonly boot: string | null;
        readonly mono: number;
        readonly tables?: string | null;
      };
    }
  | { readonly wid: number; readonly proof: number; readonly age: number; readonly mono: number }
  | { readonly id: number; readonly kvs: readonly WireKv[]; readonly revision: number }
  | { readonly id: number; readonly revision: number }
  | { readonly id: number; readonly error: { readonly code: string; readonly message: string } }
  | { readonly wid: number; readonly revision: number; readonly events: readonly WireEvent[] }
  | { readonly wid: number; readonly progress: number }
  | { readonly wid: number; readonly error: { readonly code: string; readonly message: string } };

export function encodeKv(kv: KeyValue, keysOnly = false): WireKv {
  return {
    k: kv.key,
    v: keysOnly
      ? ''
      : Buffer.from(kv.value.buffer, kv.value.byteOffset, kv.value.byteLength).toString('base64'),
    c: kv.createRevision,
    m: kv.modRevision,
    ver: kv.version,
    l: kv.lease,
  };
}

export function decodeKv(w: WireKv): KeyValue {
  const b = Buffer.from(w.v, 'base64');
  return {
    key: w.k,
    value: new Uint8Array(b.buffer, b.byteOffset, b.byteLength),
    createRevision: w.c,
    modRevision: w.m,
    version: w.ver,
    lease: w.l,
  };
}

export function encodeEvent(e: WatchEvent): WireEvent {
  return { t: e.type, kv: encodeKv(e.kv) };
}

export function decodeEvent(w: WireEvent): WatchEvent {
  return { type: w.t, kv: decodeKv(w.kv) };
}

/** Splits a byte stream into JSON lines. */
export class LineReader {
  #buf = '';
  constructor(readonly onLine: (message: unknown) => void) {}
  push(chunk: Buffer | string): void {
    this.#buf += chunk.toString();
    let i: number;
    while ((i = this.#buf.indexOf('\n')) >= 0) {
      const line = this.#buf.slice(0, i);
      this.#buf = this.#buf.slice(i + 1);
      if (line.length > 0) this.onLine(JSON.parse(line));
    }
  }
}

/** A relay address: `host:port` (TCP) or a Unix socket path (anything else, or anything with a `/`). */
export function parseRelayAddress(address: string): { host: string; port: number } | { path: string } {
  const m = /^(.*):(\d+)$/.exec(address);
  return m !== null && !address.includes('/')
    ? { host: m[1] as string, port: Number(m[2]) }
    : { path: address };
}
