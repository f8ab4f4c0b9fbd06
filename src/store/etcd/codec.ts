/**
 * Conversions between the port's types and etcd's wire messages: key ranges under the key prefix,
 * key-values, compares and transaction operations. etcd's int64 fields arrive as decimal strings
 * (rpc-codec.ts); revisions fit in a safe integer, lease ids do not and stay strings.
 */
import {
  type Compare as WireCompare,
  CompareResult,
  CompareTarget,
  type KeyValue as WireKeyValue,
  type RequestOp,
  type ResponseOp,
} from './rpc-codec.js';
import { toRange, valueToBytes, type Range } from '../keys.js';
import {
  type Compare,
  type KeySelector,
  type KeyValue,
  NO_LEASE,
  type TxnOp,
  type TxnOpResult,
} from '../types.js';

/** The empty value, shared. */
const EMPTY = new Uint8Array(0);
/** `range_end` = "\0" means "every key ≥ key" in etcd. */
const ZERO_KEY = Buffer.from([0]);

/** A key range in etcd's terms: `[key, range_end)`, or one key when `range_end` is absent. */
export interface WireRange {
  readonly key: Buffer;
  readonly range_end?: Buffer;
}

/** Applies and strips the store's key prefix (etcd3 calls this a namespace). */
export class KeyCodec {
  readonly #prefix: Buffer;
  readonly #prefixText: string;

  constructor(prefix: string) {
    this.#prefixText = prefix;
    this.#prefix = Buffer.from(prefix, 'utf8');
  }

  /** The full etcd key for a port key. */
  encode(key: string): Buffer {
    return this.#prefix.length === 0 ? Buffer.from(key, 'utf8') : Buffer.from(this.#prefixText + key, 'utf8');
  }

  /** The port key for an etcd key (the prefix removed). */
  decode(key: Buffer | Uint8Array): string {
    const buf = Buffer.isBuffer(key) ? key : Buffer.from(key.buffer, key.byteOffset, key.byteLength);
    return buf.toString('utf8', this.#prefix.length);
  }

  /** The etcd range for a selector (a bare string is a prefix when `asPrefix`, else one key). */
  range(selector: string | KeySelector, asPrefix: boolean): WireRange {
    return this.wireRange(toRange(selector, asPrefix));
  }

  wireRange(range: Range): WireRange {
    switch (range.kind) {
      case 'key':
        return { key: this.encode(range.key) };
      case 'prefix': {
        const start = this.encode(range.prefix);
        if (start.length === 0) return { key: ZERO_KEY, range_end: ZERO_KEY };
        return { key: start, range_end: prefixEnd(start) };
      }
      case 'range': {
        const start = this.encode(range.start);
        const end = this.encode(range.end);
        // [a, a) is empty; etcd would read an empty range_end as "just the key", so send a range
        // that cannot match anything instead.
        if (end.equals(start)) return { key: start, range_end: start };
        return { key: start, range_end: end };
      }
    }
  }

  /** A port KeyValue from etcd's. */
  kv(kv: WireKeyValue, keysOnly = false): KeyValue {
    return {
      key: this.decode(kv.key),
      value: keysOnly || kv.value.length === 0 ? EMPTY : new Uint8Array(kv.value),
      createRevision: Number(kv.create_revision),
      modRevision: Number(kv.mod_revision),
      version: Number(kv.version),
      lease: kv.lease === '' ? NO_LEASE : kv.lease,
    };
  }

  /** One compare of a transaction. */
  compare(c: Compare): WireCompare {
    const base = { key: this.encode(c.key), result: COMPARE_OPS[c.op] } as const;
    switch (c.target) {
      case 'value':
        return { ...base, target: CompareTarget.VALUE, value: toBuffer(valueToBytes(c.value)) };
      case 'version':
        return { ...base, target: CompareTarget.VERSION, version: c.value };
      case 'createRevision':
        return { ...base, target: CompareTarget.CREATE, create_revision: c.value };
      case 'modRevision':
        return { ...base, target: CompareTarget.MOD, mod_revision: c.value };
      case 'lease':
        return { ...base, target: CompareTarget.LEASE, lease: c.value };
    }
  }

  /** One operation of a transaction. */
  op(op: TxnOp): RequestOp {
    switch (op.type) {
      case 'put':
        return {
          request_put: {
            key: this.encode(op.key),
            value: toBuffer(valueToBytes(op.value)),
            lease: op.lease ?? NO_LEASE,
          },
        };
      case 'delete':
        return { request_delete_range: { ...this.range(op.selector, false) } };
      case 'range':
        return {
          request_range: {
            ...this.range(op.selector, true),
            limit: op.limit ?? 0,
            keys_only: op.keysOnly === true,
          },
        };
    }
  }

  /** The port result of one transaction operation. */
  opResult(op: TxnOp, res: ResponseOp, revision: number): TxnOpResult {
    switch (op.type) {
      case 'put':
        return { type: 'put', revision };
      case 'delete':
        return { type: 'delete', deleted: Number(res.response_delete_range?.deleted ?? 0) };
      case 'range': {
        const r = res.response_range;
        const kvs = (r?.kvs ?? []).map((kv) => this.kv(kv, op.keysOnly === true));
        return { type: 'range', kvs, count: Number(r?.count ?? kvs.length), more: r?.more === true };
      }
    }
  }
}

const COMPARE_OPS = {
  '=': CompareResult.EQUAL,
  '!=': CompareResult.NOT_EQUAL,
  '<': CompareResult.LESS,
  '>': CompareResult.GREATER,
} as const;

/** The smallest key greater than every key that starts with `prefix` ("\0" when there is none). */
export function prefixEnd(prefix: Buffer): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if ((end[i] as number) < 0xff) {
      end[i] = (end[i] as number) + 1;
      return end.subarray(0, i + 1);
    }
  }
  return ZERO_KEY;
}

/** A Buffer view of `bytes`, without copying. */
export function toBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}
