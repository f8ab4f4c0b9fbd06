/**
 * serve's table-driven protobuf codec (src/server/grpc/schema.ts + proto-codec.ts) against etcd's
 * `.proto` files and protobufjs, the codec it replaced: every message and enum of the table matches
 * the `.proto` field by field; on random messages of every served type (int64 and uint64 extremes,
 * oneofs, nested and repeated messages, packed enums, unknown fields) both codecs decode each other's
 * bytes to the same objects; defaults are left off the wire; the gateway's JSON follows jsonpb.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { etcdProtoRoot } from './etcd-proto.js';
import protobuf from 'protobufjs';
import {
  decodeMessage,
  encodeMessage,
  messageFromJson,
  messageToJson,
  messageType,
} from '../../src/server/grpc/proto-codec.js';
import { ENUMS, MESSAGES } from '../../src/server/grpc/schema.js';
import { etcdServices } from '../../src/server/grpc/services.js';
import { seededRandom } from '../../src/testing/index.js';

const root = etcdProtoRoot();

/** The .proto type of a schema.ts name (`KeyValue` is mvccpb's, `Permission` authpb's). */
function protoType(name: string): protobuf.Type {
  for (const pkg of ['etcdserverpb', 'mvccpb', 'authpb']) {
    const t = root.lookup(`${pkg}.${name}`);
    if (t instanceof protobuf.Type) return t;
  }
  throw new Error(`${name} is not in etcd's .proto files`);
}
/** `.mvccpb.Event.EventType` → `Event.EventType`. */
const shortName = (full: string): string => full.replace(/^\.[a-z]+pb\./, '');
const squash = (name: string): string => name.replace(/_/g, '').toLowerCase();
const loaderForm = { longs: String, defaults: true, oneofs: true } as const;

const rnd = seededRandom(29);
const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)] as T;
const INT64S = [
  '0',
  '1',
  '127',
  '128',
  '16384',
  String(2 ** 53),
  '9223372036854775807',
  '-1',
  '-9223372036854775808',
];
const UINT64S = ['0', '1', '300', String(2 ** 53 + 2), '9223372036854775808', '18446744073709551615'];

function randomBytes(): Buffer {
  const n = pick([0, 1, 3, 17, 200]);
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = Math.floor(rnd() * 256);
  return b;
}

/** A random message of `name` in the loader's object form (every field set or left out at random). */
function randomMessage(name: string, depth = 0): Record<string, unknown> {
  const m: Record<string, unknown> = {};
  const type = messageType(name);
  const oneofs = new Map<string, string>();
  for (const f of type.fields)
    if (f.oneof !== undefined && !oneofs.has(f.oneof) && rnd() < 0.7) {
      oneofs.set(f.oneof, pick(type.fields.filter((g) => g.oneof === f.oneof)).name);
    }
  for (const f of type.fields) {
    if (f.oneof !== undefined && oneofs.get(f.oneof) !== f.name) continue;
    if (f.oneof === undefined && rnd() < 0.3) continue;
    const one = (): unknown => {
      switch (f.kind) {
        case 'int64':
          return pick(INT64S);
        case 'uint64':
          return pick(UINT64S);
        case 'int32':
          return pick([0, 1, -1, 2 ** 31 - 1]);
        case 'uint32':
          return pick([0, 1, 2 ** 32 - 1, 123456789]);
        case 'enum':
          return Math.floor(rnd() * (ENUMS[f.type]?.length ?? 1));
        case 'bool':
          return rnd() < 0.5;
        case 'string':
          return pick(['', 'a', 'héllo ✓', 'x'.repeat(300)]);
        case 'bytes':
          return randomBytes();
        case 'message':
          return randomMessage(f.type, depth + 1);
      }
    };
    if (f.kind === 'message' && depth >= 3) continue;
    if (f.repeated) m[f.name] = Array.from({ length: pick([0, 1, 3]) }, one);
    else m[f.name] = one();
    if (f.oneof !== undefined) m[f.oneof] = f.name;
  }
  return m;
}

/** protobufjs's decoding of `bytes` as `name`, in the loader's object form. */
function theirDecode(name: string, bytes: Uint8Array): Record<string, unknown> {
  const t = protoType(name);
  return t.toObject(t.decode(bytes), loaderForm);
}
function theirEncode(name: string, value: Record<string, unknown>): Buffer {
  const t = protoType(name);
  return Buffer.from(t.encode(t.fromObject(value)).finish());
}

/** An unknown field of a random wire type, appended to a message. */
function unknownField(): Buffer {
  const w = protobuf.Writer.create();
  switch (pick([0, 1, 2, 5])) {
    case 0:
      w.uint32((900 << 3) | 0).uint64(123456789012);
      break;
    case 1:
      w.uint32((901 << 3) | 1).fixed64(7);
      break;
    case 2:
      w.uint32((902 << 3) | 2).bytes(randomBytes());
      break;
    default:
      w.uint32((903 << 3) | 5).fixed32(9);
  }
  return Buffer.from(w.finish());
}

const served = Object.values(etcdServices()).flatMap((s) =>
  Object.values(s).flatMap((m) => [m.requestType, m.responseType]),
);

describe('serve: table-driven protobuf codec', () => {
  test('schema.ts matches etcd’s .proto files: every field and enum value', () => {
    for (const [name, decls] of Object.entries(MESSAGES)) {
      const t = protoType(name);
      const theirs = t.fieldsArray.map((f) => {
        const resolved = f.resolve().resolvedType;
        const type = resolved === null ? f.type : shortName(resolved.fullName);
        return [
          f.id,
          f.name,
          type,
          f.repeated ? 'repeated' : f.partOf ? `oneof:${f.partOf.name}` : undefined,
        ];
      });
      const mine = decls.map(([no, n, type, flag]) => [no, n, type, flag]);
      const byNo = (a: unknown[], b: unknown[]) => (a[0] as number) - (b[0] as number);
      assert.deepEqual(mine.sort(byNo), theirs.sort(byNo), name);
    }
    for (const [name, values] of Object.entries(ENUMS)) {
      const e = root.lookupEnum(name.includes('.') ? name : `etcdserverpb.${name}`);
      const theirs = Object.entries(e.values).map(([k, v]) => [v, squash(k)]);
      assert.deepEqual(
        values.map((v, i) => [i, squash(v)]),
        theirs.sort((a, b) => (a[0] as number) - (b[0] as number)),
        name,
      );
    }
    for (const name of served)
      assert.ok(MESSAGES[name] !== undefined, `${name} is served but not in schema.ts`);
  });

  test('random messages of every served type: both codecs read each other’s bytes alike', () => {
    for (const name of new Set(served)) {
      for (let i = 0; i < 150; i++) {
        const value = randomMessage(name);
        const theirs = theirEncode(name, value);
        const expected = theirDecode(name, theirs);
        assert.deepStrictEqual(decodeMessage(name, theirs), expected, `${name}: decoding protobufjs's bytes`);
        const withUnknown = Buffer.concat([unknownField(), theirs, unknownField()]);
        assert.deepStrictEqual(decodeMessage(name, withUnknown), expected, `${name}: unknown fields`);
        const mine = encodeMessage(name, value);
        assert.deepStrictEqual(theirDecode(name, mine), expected, `${name}: protobufjs decoding ours`);
        assert.deepStrictEqual(decodeMessage(name, mine), expected, `${name}: our round trip`);
      }
    }
  });

  test('defaults are left off the wire (proto3), a oneof member is written whatever its value', () => {
    for (const name of new Set(served)) {
      const t = messageType(name);
      const defaults = decodeMessage(name, Buffer.alloc(0));
      if (t.fields.some((f) => f.kind === 'message' || f.oneof !== undefined)) continue;
      assert.equal(encodeMessage(name, defaults).length, 0, name);
    }
    const compare = encodeMessage('Compare', { result: 0, target: 0, key: Buffer.from('k'), version: '0' });
    assert.deepEqual(decodeMessage('Compare', compare).target_union, 'version');
    const packed = encodeMessage('WatchCreateRequest', { key: Buffer.from('k'), filters: [0, 1] });
    assert.deepEqual(theirDecode('WatchCreateRequest', packed).filters, [0, 1]);
    const unpacked = Buffer.from([0x0a, 1, 0x6b, 0x28, 1, 0x28, 0]);
    assert.deepEqual(decodeMessage('WatchCreateRequest', unpacked).filters, [1, 0]);
  });

  test('gateway JSON: jsonpb names, int64 as strings, enums by name, bytes in base64, no defaults', () => {
    const bytes = messageFromJson('RangeRequest', {
      key: Buffer.from('a').toString('base64'),
      rangeEnd: Buffer.from('b').toString('base64'),
      limit: 5,
      sort_order: 'DESCEND',
      sort_target: 'Mod',
      keys_only: true,
      unknown_field: 1,
    });
    const req = decodeMessage('RangeRequest', bytes);
    assert.deepEqual(
      [req.key, req.range_end, req.limit, req.sort_order, req.sort_target, req.keys_only],
      [Buffer.from('a'), Buffer.from('b'), '5', 2, 3, true],
    );
    const json = messageToJson(
      'WatchResponse',
      encodeMessage('WatchResponse', {
        header: { cluster_id: '18446744073709551615', member_id: '1', revision: 7, raft_term: 0 },
        watch_id: 0,
        created: false,
        events: [{ type: 0, kv: { key: Buffer.from('k'), mod_revision: 7, value: Buffer.alloc(0) } }],
      }),
    );
    assert.deepEqual(json, {
      header: { cluster_id: '18446744073709551615', member_id: '1', revision: '7' },
      events: [{ kv: { key: 'aw==', mod_revision: '7' } }],
    });
    const cmp = messageFromJson('TxnRequest', {
      compare: [{ result: 'NOT_EQUAL', target: 'VALUE', key: 'aw==', value: '' }],
    });
    assert.deepEqual(messageToJson('TxnRequest', cmp), {
      compare: [{ result: 'NOT_EQUAL', target: 'VALUE', key: 'aw==', value: '' }],
    });
    assert.throws(() => messageFromJson('RangeRequest', { limit: 'ten' }), /limit/);
  });
});
