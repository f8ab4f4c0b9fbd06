/**
 * The hand-written codecs of the hot KV RPCs (src/server/grpc/wire.ts) against protobufjs through
 * `@grpc/proto-loader`, the codec they replace: on random messages (every field, int64 extremes and
 * negatives, empty and multi-kilobyte bytes, nested transactions, unknown fields) both must give the
 * same objects.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { ETCD_PROTO_DIR, etcdProtoRoot } from './etcd-proto.js';
import { loadPackageDefinition, type MethodDefinition, type ServiceDefinition } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import protobuf from 'protobufjs';
import {
  decodeRequest,
  encodeEvent,
  encodeResponse,
  encodeWatchResponse,
} from '../../src/server/grpc/wire.js';
import { seededRandom } from '../../src/testing/index.js';

const definition = loadSync(join(ETCD_PROTO_DIR, 'rpc.proto'), {
  keepCase: true,
  longs: String,
  defaults: true,
  oneofs: true,
});
const services = (
  loadPackageDefinition(definition) as unknown as {
    etcdserverpb: { KV: { service: ServiceDefinition }; Watch: { service: ServiceDefinition } };
  }
).etcdserverpb;
const kv = services.KV.service;
const watchMethod = services.Watch.service.Watch as MethodDefinition<unknown, unknown>;
const method = (name: string): MethodDefinition<unknown, unknown> =>
  kv[name] as MethodDefinition<unknown, unknown>;

const root = etcdProtoRoot();
const type = (name: string): protobuf.Type => root.lookupType(`etcdserverpb.${name}`);

const rnd = seededRandom(13);
const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)] as T;
const INT64S = [
  '0',
  '1',
  '127',
  '128',
  '300',
  '16384',
  String(2 ** 53 - 1),
  String(2 ** 53),
  '9223372036854775807',
  '-1',
  '-9223372036854775808',
  '7587868434826240001',
];
const int64 = (): string => (rnd() < 0.5 ? String(Math.floor(rnd() * 1e6)) : pick(INT64S));
const bytes = (): Buffer => {
  const n = pick([0, 0, 1, 5, 64, 127, 128, 200, 20_000]);
  return Buffer.from(Array.from({ length: n }, () => Math.floor(rnd() * 256)));
};
const bool = (): boolean => rnd() < 0.5;
const maybe = <T>(f: () => T): T | undefined => (rnd() < 0.6 ? f() : undefined);

/** A random message object with some fields left out (as a client leaves defaults out). */
function sparse(fields: Record<string, () => unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, f] of Object.entries(fields)) {
    const v = maybe(f);
    if (v !== undefined) out[k] = v;
  }
  return out;
}

const rangeRequest = (): Record<string, unknown> =>
  sparse({
    key: bytes,
    range_end: bytes,
    limit: int64,
    revision: int64,
    sort_order: () => pick([0, 1, 2, 7]),
    sort_target: () => pick([0, 1, 2, 3, 4]),
    serializable: bool,
    keys_only: bool,
    count_only: bool,
    min_mod_revision: int64,
    max_mod_revision: int64,
    min_create_revision: int64,
    max_create_revision: int64,
  });
const putRequest = (): Record<string, unknown> =>
  sparse({ key: bytes, value: bytes, lease: int64, prev_kv: bool, ignore_value: bool, ignore_lease: bool });
const deleteRequest = (): Record<string, unknown> => sparse({ key: bytes, range_end: bytes, prev_kv: bool });
const compare = (): Record<string, unknown> => {
  const c = sparse({
    result: () => pick([0, 1, 2, 3]),
    target: () => pick([0, 1, 2, 3, 4]),
    key: bytes,
    range_end: bytes,
  });
  const u = pick(['version', 'create_revision', 'mod_revision', 'value', 'lease', undefined]);
  if (u !== undefined) c[u] = u === 'value' ? bytes() : int64();
  return c;
};
const requestOp = (depth: number): Record<string, unknown> => {
  const which = pick(depth > 0 ? [1, 2, 3, 4] : [1, 2, 3]);
  if (which === 1) return { request_range: rangeRequest() };
  if (which === 2) return { request_put: putRequest() };
  if (which === 3) return { request_delete_range: deleteRequest() };
  return { request_txn: txnRequest(depth - 1) };
};
const list = <T>(f: () => T, max: number): T[] => Array.from({ length: Math.floor(rnd() * (max + 1)) }, f);
const txnRequest = (depth = 2): Record<string, unknown> => ({
  compare: list(compare, 3),
  success: list(() => requestOp(depth), 3),
  failure: list(() => requestOp(depth), 2),
});

const num = (): number => pick([0, 1, 127, 128, 99_999, 2 ** 40]);
const header = (): Record<string, unknown> => ({
  cluster_id: pick(['0', '1', '18446744073709551615', '12345678901234567890', '7587868434826240001']),
  member_id: pick(['0', '9372538179322589801', '42']),
  revision: num(),
  raft_term: pick([0, 1, '1']),
});
const keyValue = (): Record<string, unknown> => ({
  key: bytes(),
  value: bytes(),
  create_revision: num(),
  mod_revision: num(),
  version: num(),
  lease: pick(['0', '7587868434826240001', '9223372036854775807', '5']),
});
const rangeResponse = (): Record<string, unknown> => ({
  header: header(),
  kvs: list(keyValue, 4),
  more: bool(),
  count: num(),
});
const putResponse = (): Record<string, unknown> => ({
  header: header(),
  prev_kv: rnd() < 0.5 ? keyValue() : null,
});
const deleteResponse = (): Record<string, unknown> => ({
  header: header(),
  deleted: num(),
  prev_kvs: list(keyValue, 3),
});
const txnResponse = (depth = 2): Record<string, unknown> => ({
  header: header(),
  succeeded: bool(),
  responses: list(() => {
    const which = pick(depth > 0 ? [1, 2, 3, 4] : [1, 2, 3]);
    if (which === 1) return { response_range: rangeResponse() };
    if (which === 2) return { response_put: putResponse() };
    if (which === 3) return { response_delete_range: deleteResponse() };
    return { response_txn: txnResponse(depth - 1) };
  }, 3),
});

const REQUESTS = {
  Range: ['RangeRequest', rangeRequest],
  Put: ['PutRequest', putRequest],
  DeleteRange: ['DeleteRangeRequest', deleteRequest],
  Txn: ['TxnRequest', () => txnRequest()],
} as const;
const RESPONSES = {
  Range: rangeResponse,
  Put: putResponse,
  DeleteRange: deleteResponse,
  Txn: () => txnResponse(),
} as const;

/** An unknown field (number 1000, of each wire type) appended to a message: both codecs skip it. */
function withUnknown(buf: Uint8Array): Buffer {
  const w = protobuf.Writer.create();
  w.uint32((1000 << 3) | 0).uint64(5);
  w.uint32((1001 << 3) | 2).bytes(Buffer.from('zz'));
  w.uint32((1002 << 3) | 1).fixed64(1);
  w.uint32((1003 << 3) | 5).fixed32(1);
  return Buffer.concat([buf, w.finish()]);
}

describe('hand-written KV codecs (wire.ts)', () => {
  test('requests decode to exactly what the loader decodes', { timeout: 30_000 }, () => {
    for (const [name, [typeName, gen]] of Object.entries(REQUESTS)) {
      const t = type(typeName);
      for (let i = 0; i < 400; i++) {
        const obj = gen();
        let buf: Buffer = Buffer.from(t.encode(t.fromObject(obj)).finish());
        if (i % 5 === 0) buf = withUnknown(buf);
        const expected = method(name).requestDeserialize(buf);
        const actual = decodeRequest[name as keyof typeof decodeRequest](buf);
        assert.deepStrictEqual(actual, expected, `${name} #${i}: ${JSON.stringify(obj)}`);
      }
    }
  });

  test('responses encode to bytes the loader reads back as the same objects', { timeout: 30_000 }, () => {
    for (const [name, gen] of Object.entries(RESPONSES)) {
      const m = method(name);
      for (let i = 0; i < 400; i++) {
        const obj = gen();
        const ours = encodeResponse[name as keyof typeof encodeResponse](obj);
        const theirs = m.responseSerialize(obj);
        assert.deepStrictEqual(m.responseDeserialize(ours), m.responseDeserialize(theirs), `${name} #${i}`);
      }
    }
  });

  test(
    'watch responses, with events as objects or encoded once, read back as the loader’s',
    { timeout: 30_000 },
    () => {
      for (let i = 0; i < 400; i++) {
        const events = list(
          () => ({ type: pick([0, 1]), kv: keyValue(), prev_kv: rnd() < 0.3 ? keyValue() : null }),
          4,
        );
        const obj: Record<string, unknown> = {
          header: header(),
          watch_id: pick([0, 1, 7, -1, '-1', '300']),
          created: bool(),
          canceled: bool(),
          compact_revision: pick([0, 5, '12345']),
          cancel_reason: pick(['', 'etcdserver: mvcc: required revision has been compacted', 'ünïcode']),
          fragment: bool(),
          events,
        };
        const expected = watchMethod.responseDeserialize(watchMethod.responseSerialize(obj));
        const asObjects = watchMethod.responseDeserialize(encodeWatchResponse(obj));
        const preEncoded = watchMethod.responseDeserialize(
          encodeWatchResponse({
            ...obj,
            events: events.map((e) => encodeEvent(e as unknown as Parameters<typeof encodeEvent>[0])),
          }),
        );
        assert.deepStrictEqual(asObjects, expected, `#${i}`);
        assert.deepStrictEqual(preEncoded, expected, `#${i} (events encoded once)`);
      }
    },
  );

  test('a truncated request is refused, not read past its end', { timeout: 10_000 }, () => {
    const t = type('PutRequest');
    const buf = Buffer.from(
      t.encode(t.fromObject({ key: Buffer.from('key'), value: Buffer.alloc(300) })).finish(),
    );
    assert.throws(() => decodeRequest.Put(buf.subarray(0, buf.length - 1)), RangeError);
    assert.throws(() => method('Put').requestDeserialize(buf.subarray(0, buf.length - 1)));
  });
});
