/**
 * Translation between etcd's wire forms (byte keys, `[key, range_end)` ranges, int64 strings) and
 * the Store port (string keys, selectors).
 *
 * Keys are bytes in etcd. Inside the server they are *binary strings*: one char per byte (U+0000 to
 * U+00FF, Node's 'latin1' encoding), so any byte string is a key, the engine's string keys stay
 * strings (its maps, prefix matching and code-unit order work unchanged: code-unit order of binary
 * strings is byte order, as etcd sorts), and converting is the cheapest decode Node has. An ASCII key
 * is the same string either way; a UTF-8 key `é` is the two-char string '\u00c3\u00a9' inside the
 * server. Values are bytes and pass through unchanged.
 */
import { compareKeys } from '../../store/index.js';
import { type KeySelector, type KeyValue, type LeaseId, NO_LEASE } from '../../store/index.js';
import { ETCD } from './errors.js';

/** A string above every binary-string key (any char above U+00FF is): etcd's open range end "\0". */
export const ABOVE_ALL_KEYS = '\u0100';

/** The `ResponseHeader` fields that do not change. */
export interface HeaderBase {
  readonly cluster_id: string;
  readonly member_id: string;
}

/** A protobuf KeyValue in the loader's object form. */
export interface ProtoKeyValue {
  key: Buffer;
  value: Buffer;
  create_revision: number;
  mod_revision: number;
  version: number;
  lease: string;
}

/** Decodes a key to its binary string; empty → etcd's "key is not provided". */
export function decodeKey(bytes: Buffer | Uint8Array | undefined | null): string {
  if (bytes == null || bytes.length === 0) throw ETCD.emptyKey();
  return binary(bytes);
}

/** Bytes as a binary string (one char per byte). */
export function binary(bytes: Uint8Array): string {
  return Buffer.isBuffer(bytes)
    ? bytes.toString('latin1')
    : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('latin1');
}

/** A binary string as bytes. */
export function keyBytes(key: string): Buffer {
  return Buffer.from(key, 'latin1');
}

/** etcd's "prefix end" of a key: the smallest key above every key that starts with it. */
export function prefixEnd(key: Uint8Array): Buffer {
  const end = Buffer.from(key);
  for (let i = end.length - 1; i >= 0; i--) {
    if ((end[i] as number) < 0xff) {
      end[i] = (end[i] as number) + 1;
      return end.subarray(0, i + 1);
    }
  }
  return Buffer.from([0]);
}

/** A selector that matches nothing (but still validates a read revision). */
function nothing(key: string): KeySelector {
  return { start: key, end: key };
}

/**
 * The port selector for an etcd range: no `range_end` is one key, `range_end = "\0"` is every key
 * from `key` on (every key when `key` is also "\0"), `range_end = prefixEnd(key)` is a prefix,
 * anything else `[key, range_end)` (empty when `range_end ≤ key`).
 */
export function selectorOf(key: Buffer | undefined | null, rangeEnd: Buffer | undefined | null): KeySelector {
  const start = decodeKey(key);
  if (rangeEnd == null || rangeEnd.length === 0) return { key: start };
  const k = key as Buffer;
  if (rangeEnd.length === 1 && rangeEnd[0] === 0) {
    if (k.length === 1 && k[0] === 0) return { prefix: '' };
    return { start, end: ABOVE_ALL_KEYS };
  }
  if (prefixEnd(k).equals(rangeEnd)) return { prefix: start };
  const end = binary(rangeEnd);
  if (compareKeys(end, start) <= 0) return nothing(start);
  return { start, end };
}

/** A lease id from the wire: `'0'` → none; negative or malformed ids can name no lease. */
export function leaseOf(id: string | number | undefined | null): LeaseId | undefined {
  const s = String(id ?? '0');
  if (s === '0') return NO_LEASE;
  return /^[1-9]\d{0,18}$/.test(s) ? s : undefined;
}

/** A port KeyValue in wire form. */
export function kvOut(kv: KeyValue): ProtoKeyValue {
  return {
    key: Buffer.from(kv.key, 'latin1'),
    value: Buffer.from(kv.value.buffer, kv.value.byteOffset, kv.value.byteLength),
    create_revision: kv.createRevision,
    mod_revision: kv.modRevision,
    version: kv.version,
    lease: kv.lease,
  };
}

/** `RangeRequest.SortTarget` values. */
const SORT_KEY = 0;
const SORT_VERSION = 1;
const SORT_CREATE = 2;
const SORT_MOD = 3;
const SORT_VALUE = 4;

/** Sorts key-values as etcd does for `sort_order` (1 ascend, 2 descend) and `sort_target`. */
export function sortKvs(kvs: KeyValue[], order: number, target: number): KeyValue[] {
  if (order === 0) return kvs;
  const sign = order === 2 ? -1 : 1;
  const by = (a: KeyValue, b: KeyValue): number => {
    switch (target) {
      case SORT_VERSION:
        return a.version - b.version;
      case SORT_CREATE:
        return a.createRevision - b.createRevision;
      case SORT_MOD:
        return a.modRevision - b.modRevision;
      case SORT_VALUE:
        return Buffer.compare(a.value, b.value);
      case SORT_KEY:
      default:
        return compareKeys(a.key, b.key);
    }
  };
  // Stable: ties keep key order, as etcd's stable sort of a key-ordered list does.
  return kvs.slice().sort((a, b) => sign * by(a, b));
}

/** True when a range needs every matching key before it can apply `limit`. */
export function needsFullScan(req: RangeLike): boolean {
  const sorting = req.sort_order !== 0 && !(req.sort_target === SORT_KEY && req.sort_order === 1);
  return sorting || hasFilters(req);
}

function hasFilters(req: RangeLike): boolean {
  return (
    Number(req.min_mod_revision) > 0 ||
    Number(req.max_mod_revision) > 0 ||
    Number(req.min_create_revision) > 0 ||
    Number(req.max_create_revision) > 0
  );
}

/** The options of a RangeRequest that the server applies after the port's range. */
export interface RangeLike {
  limit: string;
  sort_order: number;
  sort_target: number;
  min_mod_revision: string;
  max_mod_revision: string;
  min_create_revision: string;
  max_create_revision: string;
}

/** Applies etcd's revision filters, sort and limit to a full result (count is not changed). */
export function finishRange(kvs: readonly KeyValue[], req: RangeLike): { kvs: KeyValue[]; more: boolean } {
  let out = kvs.slice();
  if (hasFilters(req)) {
    const minMod = Number(req.min_mod_revision);
    const maxMod = Number(req.max_mod_revision);
    const minCreate = Number(req.min_create_revision);
    const maxCreate = Number(req.max_create_revision);
    out = out.filter(
      (kv) =>
        (minMod <= 0 || kv.modRevision >= minMod) &&
        (maxMod <= 0 || kv.modRevision <= maxMod) &&
        (minCreate <= 0 || kv.createRevision >= minCreate) &&
        (maxCreate <= 0 || kv.createRevision <= maxCreate),
    );
  }
  out = sortKvs(out, req.sort_order, req.sort_target);
  const limit = Number(req.limit);
  if (limit > 0 && out.length > limit) return { kvs: out.slice(0, limit), more: true };
  return { kvs: out, more: false };
}
