/**
 * The etcd client's hand-written codecs (src/store/etcd/rpc-codec.ts) against protobufjs on random
 * messages: every request encoded by hand decodes (with protobufjs) to what protobufjs's own encoding
 * of it decodes to, and every response encoded by protobufjs (with unknown fields appended) decodes
 * by hand to protobufjs's `toObject` (`longs: String`, `enums: Number`, `defaults: true`).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { etcdProtoRoot } from '../server/etcd-proto.js';
import protobuf from 'protobufjs';
import { decode, encode } from '../../src/store/etcd/rpc-codec.js';
import { seededRandom } from '../../src/testing/index.js';

const root = etcdProtoRoot();
const type = (name: string): protobuf.Type =>
  root.lookupType(name.includes('.') ? name : `etcdserverpb.${name}`);
const AS_LOADER = { longs: String, enums: Number, defaults: true, oneofs: false } as const;

const rnd = seededRandom(15);
const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)] as T;
const INT64S = [
  '0',
  '1',
  '127',
  '128',
  String(2 ** 53 - 1),
  String(2 ** 53),
  '9223372036854775807',
  '7587868434826240001',
];
const int64 = (): string | number => (rnd() < 0.5 ? Math.floor(rnd() * 1e6) : pick(INT64S));
const uint64 = (): string => pick(['0', '1', '18446744073709551615', '12345678901234567890', '42']);
const bytes = (): Buffer => {
  const n = pick([0, 0, 1, 5, 127, 128, 200, 20_000]);
  return Buffer.from(Array.from({ length: n }, () => Math.floor(rnd() * 256)));
};
const bool = (): boolean => rnd() < 0.5;
const text = (): string => pick(['', 'x', 'etcdserver: mvcc: required revision has been compacted', 'ü € 𝄞']);
const list = <T>(f: () => T, max: number): T[] => Array.from({ length: Math.floor(rnd() * (max + 1)) }, f);
function sparse(fields: Record<string, () => unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, f] of Object.entries(fields)) if (rnd() < 0.6) out[k] = f();
  return out;
}

// ---- requests -------------------------------------------------------------------------------------
const rangeRequest = (): Record<string, unknown> =>
  sparse({
    key: bytes,
    range_end: bytes,
    limit: int64,
    revision: int64,
    serializable: bool,
    keys_only: bool,
    count_only: bool,
  });
const putRequest = (): Record<string, unknown> =>
  sparse({ key: bytes, value: bytes, lease: int64, prev_kv: bool, ignore_value: bool, ignore_lease: bool });
const deleteRequest = (): Record<string, unknown> => sparse({ key: bytes, range_end: bytes, prev_kv: bool });
const compare = (): Record<string, unknown> => {
  const c: Record<string, unknown> = {
    result: pick([0, 1, 2, 3]),
    target: pick([0, 1, 2, 3, 4]),
    key: bytes(),
  };
  if (bool()) c.range_end = bytes();
  const u = pick(['version', 'create_revision', 'mod_revision', 'value', 'lease']);
  c[u] = u === 'value' ? bytes() : pick([0, int64()]);
  return c;
};
const requestOp = (depth: number): Record<string, unknown> => {
  const which = pick(depth > 0 ? [1, 2, 3, 4] : [1, 2, 3]);
  if (which === 1) return { request_range: { key: bytes(), ...rangeRequest() } };
  if (which === 2) return { request_put: { key: bytes(), ...putRequest() } };
  if (which === 3) return { request_delete_range: { key: bytes(), ...deleteRequest() } };
  return { request_txn: txnRequest(depth - 1) };
};
const txnRequest = (depth = 2): Record<string, unknown> => ({
  compare: list(compare, 3),
  success: list(() => requestOp(depth), 3),
  failure: list(() => requestOp(depth), 2),
});
const watchRequest = (): Record<string, unknown> =>
  pick([
    () => ({
      create_request: {
        key: bytes(),
        ...sparse({
          range_end: bytes,
          start_revision: int64,
          progress_notify: bool,
          prev_kv: bool,
          watch_id: int64,
          fragment: bool,
        }),
      },
    }),
    () => ({ cancel_request: { watch_id: int64() } }),
    () => ({ progress_request: {} }),
  ])();

const REQUESTS: [string, (r: never) => Buffer, () => Record<string, unknown>][] = [
  ['RangeRequest', encode.range, () => ({ key: bytes(), ...rangeRequest() })],
  ['PutRequest', encode.put, () => ({ key: bytes(), ...putRequest() })],
  ['DeleteRangeRequest', encode.deleteRange, () => ({ key: bytes(), ...deleteRequest() })],
  ['TxnRequest', encode.txn, () => txnRequest()],
  ['CompactionRequest', encode.compact, () => ({ revision: int64(), ...sparse({ physical: bool }) })],
  ['WatchRequest', encode.watch, watchRequest],
  ['LeaseGrantRequest', encode.leaseGrant, () => ({ TTL: int64(), ...sparse({ ID: int64 }) })],
  ['LeaseRevokeRequest', encode.leaseId, () => ({ ID: int64() })],
  ['LeaseKeepAliveRequest', encode.leaseId, () => ({ ID: int64() })],
  ['LeaseTimeToLiveRequest', encode.leaseTimeToLive, () => ({ ID: int64(), ...sparse({ keys: bool }) })],
  ['AuthenticateRequest', encode.authenticate, () => ({ name: text(), password: text() })],
];

// ---- responses ------------------------------------------------------------------------------------
const header = (): Record<string, unknown> => ({
  cluster_id: uint64(),
  member_id: uint64(),
  revision: int64(),
  raft_term: uint64(),
});
const keyValue = (): Record<string, unknown> =>
  sparse({
    key: bytes,
    value: bytes,
    create_revision: int64,
    mod_revision: int64,
    version: int64,
    lease: int64,
  });
const maybeHeader = (): Record<string, unknown> => (rnd() < 0.9 ? { header: header() } : {});
const rangeResponse = (): Record<string, unknown> => ({
  ...maybeHeader(),
  kvs: list(keyValue, 4),
  ...sparse({ more: bool, count: int64 }),
});
const putResponse = (): Record<string, unknown> => ({ ...maybeHeader(), ...sparse({ prev_kv: keyValue }) });
const deleteResponse = (): Record<string, unknown> => ({
  ...maybeHeader(),
  prev_kvs: list(keyValue, 3),
  ...sparse({ deleted: int64 }),
});
const txnResponse = (depth = 2): Record<string, unknown> => ({
  ...maybeHeader(),
  ...sparse({ succeeded: bool }),
  responses: list(() => {
    const which = pick(depth > 0 ? [1, 2, 3, 4] : [1, 2, 3]);
    if (which === 1) return { response_range: rangeResponse() };
    if (which === 2) return { response_put: putResponse() };
    if (which === 3) return { response_delete_range: deleteResponse() };
    return { response_txn: txnResponse(depth - 1) };
  }, 3),
});
const event = (): Record<string, unknown> => ({
  type: pick([0, 1]),
  ...sparse({ kv: keyValue, prev_kv: keyValue }),
});

const RESPONSES: [string, (b: Buffer) => unknown, () => Record<string, unknown>][] = [
  ['RangeResponse', decode.range, rangeResponse],
  ['PutResponse', decode.put, putResponse],
  ['DeleteRangeResponse', decode.deleteRange, deleteResponse],
  ['TxnResponse', decode.txn, () => txnResponse()],
  ['CompactionResponse', decode.headerOnly, maybeHeader],
  ['LeaseRevokeResponse', decode.headerOnly, maybeHeader],
  [
    'WatchResponse',
    decode.watch,
    () => ({
      ...maybeHeader(),
      ...sparse({
        watch_id: int64,
        created: bool,
        canceled: bool,
        compact_revision: int64,
        cancel_reason: text,
        fragment: bool,
      }),
      events: list(event, 4),
    }),
  ],
  [
    'LeaseGrantResponse',
    decode.leaseGrant,
    () => ({ ...maybeHeader(), ...sparse({ ID: int64, TTL: int64, error: text }) }),
  ],
  [
    'LeaseKeepAliveResponse',
    decode.leaseKeepAlive,
    () => ({ ...maybeHeader(), ...sparse({ ID: int64, TTL: int64 }) }),
  ],
  [
    'LeaseTimeToLiveResponse',
    decode.leaseTimeToLive,
    () => ({
      ...maybeHeader(),
      ...sparse({ ID: int64, TTL: int64, grantedTTL: int64 }),
      keys: list(bytes, 3),
    }),
  ],
  ['AuthenticateResponse', decode.authenticate, () => ({ ...maybeHeader(), ...sparse({ token: text }) })],
  [
    'StatusResponse',
    decode.status,
    () => ({ ...maybeHeader(), ...sparse({ version: () => pick(['3.5.17', '3.6.0']) }) }),
  ],
];

/** An unknown field of each wire type appended to a message: the decoders skip it. */
function withUnknown(buf: Uint8Array): Buffer {
  const w = protobuf.Writer.create();
  w.uint32((1000 << 3) | 0).uint64(5);
  w.uint32((1001 << 3) | 2).bytes(Buffer.from('zz'));
  w.uint32((1002 << 3) | 1).fixed64(1);
  w.uint32((1003 << 3) | 5).fixed32(1);
  return Buffer.concat([buf, w.finish()]);
}

describe('etcd client codecs (rpc-codec.ts) against protobufjs', () => {
  test('requests encode to what protobufjs encodes', { timeout: 30_000 }, () => {
    for (const [name, enc, gen] of REQUESTS) {
      const t = type(name);
      for (let i = 0; i < 300; i++) {
        const input = gen();
        const framed = enc(input as never);
        assert.equal(framed[0], 0);
        assert.equal(framed.readUInt32BE(1), framed.length - 5, `${name}: gRPC prefix`);
        const mine = t.toObject(t.decode(framed.subarray(5)), AS_LOADER);
        const theirs = t.toObject(t.decode(t.encode(t.fromObject(input)).finish()), AS_LOADER);
        assert.deepStrictEqual(mine, theirs, `${name} #${i}`);
      }
    }
  });

  test('responses decode to what protobufjs decodes', { timeout: 30_000 }, () => {
    for (const [name, dec, gen] of RESPONSES) {
      const t = type(name);
      for (let i = 0; i < 300; i++) {
        const bytesOnWire = withUnknown(t.encode(t.fromObject(gen())).finish());
        const theirs = t.toObject(t.decode(bytesOnWire), AS_LOADER);
        const mine = dec(bytesOnWire) as Record<string, unknown>;
        // StatusResponse: only the fields the engine reads are decoded.
        const expected =
          name === 'StatusResponse' ? { header: theirs.header, version: theirs.version } : theirs;
        assert.deepStrictEqual(mine, expected, `${name} #${i}`);
      }
    }
  });

  test('a truncated response is an error, not a wrong message', () => {
    const t = type('RangeResponse');
    const full = Buffer.from(
      t.encode(t.fromObject({ header: header(), kvs: [{ key: Buffer.from('k'), value: bytes() }] })).finish(),
    );
    for (const cut of [1, 5, full.length - 1])
      assert.throws(() => decode.range(full.subarray(0, cut)), RangeError);
  });

  test('StatusRequest is an empty gRPC message', () => {
    assert.deepEqual([...encode.empty()], [0, 0, 0, 0, 0]);
  });
});
