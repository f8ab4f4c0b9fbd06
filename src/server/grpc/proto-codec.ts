/**
 * The protobuf codec of every etcd message muster serve handles that has no hand-written codec in
 * wire.ts (Lease, Auth, Cluster, Maintenance, Compact, Watch requests), and the JSON of the HTTP
 * gateway, all driven by the table in schema.ts on the primitives of `src/util/protobuf.ts`.
 *
 * Objects are in the form `@grpc/proto-loader` gave with `keepCase`, `longs: String`,
 * `defaults: true`, `oneofs: true` — the form wire.ts and the handlers use: field names as in the
 * `.proto`, int64 and uint64 as decimal strings (uint64 unsigned), enums as numbers, bytes as
 * Buffers sharing the request's memory, every field present (scalars with their default, repeated
 * ones as `[]`, unset messages `null`), and a oneof's set member named by a property of the oneof's
 * name. Decoding skips unknown fields (and known ones with an unexpected wire type); a repeated
 * number is read packed or not. Encoding leaves out fields that hold their default, as proto3 and
 * etcd do (a oneof's set member is written whatever its value), packs repeated numbers, and takes an
 * int64 as a number or a decimal string.
 *
 * JSON is etcd's grpc-gateway's (jsonpb with `OrigName`, without `EmitDefaults`): field names as in
 * the `.proto`, int64 and uint64 as strings, enums by name, bytes in base64, and no field that holds
 * its default. Requests are also read with the lowerCamelCase names jsonpb accepts, enums by name
 * in either spelling (`NOT_EQUAL`, `NotEqual`) or by number.
 */
import { ProtoReader, ProtoWriter } from '../../util/protobuf.js';
import { ETCD } from './errors.js';
import { ENUMS, type FieldDecl, MESSAGES, type ScalarType } from './schema.js';

type Kind = ScalarType | 'enum' | 'message';

export interface Field {
  readonly no: number;
  readonly name: string;
  /** The lowerCamelCase name jsonpb also accepts (`range_end` → `rangeEnd`). */
  readonly jsonName: string;
  readonly kind: Kind;
  /** The enum's or message's name. */
  readonly type: string;
  readonly repeated: boolean;
  readonly oneof: string | undefined;
  /** The wire type a single value has (0 varint, 2 length-delimited). */
  readonly wire: 0 | 2;
}

/** A message type compiled from its {@link FieldDecl}s. */
export interface MessageType {
  readonly name: string;
  readonly fields: readonly Field[];
  readonly byNumber: ReadonlyMap<number, Field>;
}

const SCALARS = new Set<string>(['int64', 'uint64', 'int32', 'uint32', 'bool', 'string', 'bytes']);
const compiled = new Map<string, MessageType>();

/** The message type `name` (compiled on first use); throws for a name schema.ts does not list. */
export function messageType(name: string): MessageType {
  const known = compiled.get(name);
  if (known !== undefined) return known;
  const decls = MESSAGES[name];
  if (decls === undefined) throw new Error(`unknown etcd message ${name}`);
  const fields = decls.map(compileField);
  const type: MessageType = { name, fields, byNumber: new Map(fields.map((f) => [f.no, f])) };
  compiled.set(name, type);
  return type;
}

function compileField([no, name, type, flag]: FieldDecl): Field {
  const kind: Kind = SCALARS.has(type)
    ? (type as ScalarType)
    : ENUMS[type] !== undefined
      ? 'enum'
      : MESSAGES[type] !== undefined
        ? 'message'
        : unknownType(type);
  return {
    no,
    name,
    jsonName: name.replace(/_([a-z0-9])/g, (_m, c: string) => c.toUpperCase()),
    kind,
    type,
    repeated: flag === 'repeated',
    oneof: flag?.startsWith('oneof:') === true ? flag.slice('oneof:'.length) : undefined,
    wire: kind === 'string' || kind === 'bytes' || kind === 'message' ? 2 : 0,
  };
}

function unknownType(type: string): never {
  throw new Error(`schema.ts names an unknown type ${type}`);
}

// ---- decoding -----------------------------------------------------------------------------------

/** One EMPTY Buffer for every unset bytes field (a zero-length Buffer cannot be changed). */
const EMPTY_BYTES = Buffer.alloc(0);

function defaultOf(f: Field): unknown {
  if (f.repeated) return [];
  switch (f.kind) {
    case 'int64':
    case 'uint64':
      return '0';
    case 'int32':
    case 'uint32':
    case 'enum':
      return 0;
    case 'bool':
      return false;
    case 'string':
      return '';
    case 'bytes':
      return EMPTY_BYTES;
    case 'message':
      return null;
  }
}

/** An int64 varint as an unsigned decimal string. */
function uint64(r: ProtoReader): string {
  const s = r.int64();
  return s.startsWith('-') ? BigInt.asUintN(64, BigInt(s)).toString() : s;
}

function readValue(f: Field, r: ProtoReader): unknown {
  switch (f.kind) {
    case 'int64':
      return r.int64();
    case 'uint64':
      return uint64(r);
    case 'int32':
    case 'enum':
      return r.enum();
    case 'uint32':
      return r.enum() >>> 0;
    case 'bool':
      return r.bool();
    case 'string':
      return r.string();
    case 'bytes':
      return r.bytes();
    case 'message':
      return decodeBody(messageType(f.type), r.sub());
  }
}

/**
 * Walks the fields of one message: `set(field, value)` for each value read (each element of a
 * repeated field, packed ones unpacked), with `read` turning the wire value into the caller's form.
 */
function walk(
  type: MessageType,
  r: ProtoReader,
  read: (f: Field, r: ProtoReader) => unknown,
  set: (f: Field, value: unknown) => void,
): void {
  while (r.pos < r.end) {
    const tag = r.uint();
    const wire = tag & 7;
    const f = type.byNumber.get(tag >>> 3);
    if (f === undefined) r.skip(wire);
    else if (wire === f.wire) set(f, read(f, r));
    else if (wire === 2 && f.repeated && f.wire === 0) {
      const packed = r.sub();
      while (packed.pos < packed.end) set(f, read(f, packed));
    } else r.skip(wire);
  }
}

function decodeBody(type: MessageType, r: ProtoReader): Record<string, unknown> {
  const m: Record<string, unknown> = {};
  for (const f of type.fields) if (f.oneof === undefined) m[f.name] = defaultOf(f);
  walk(type, r, readValue, (f, v) => {
    if (f.repeated) (m[f.name] as unknown[]).push(v);
    else {
      if (f.oneof !== undefined) {
        const before = m[f.oneof];
        if (typeof before === 'string' && before !== f.name) delete m[before];
        m[f.oneof] = f.name;
      }
      m[f.name] = v;
    }
  });
  return m;
}

/** Decodes a message of type `name` (the bytes of a gRPC message, prefix removed). */
export function decodeMessage(name: string, buf: Buffer): Record<string, unknown> {
  return decodeBody(messageType(name), new ProtoReader(buf, 0, buf.length));
}

// ---- encoding -----------------------------------------------------------------------------------

/** One writer for the module: messages are encoded synchronously, one at a time. */
const out = new ProtoWriter();

function isZero(v: unknown): boolean {
  return v === 0 || v === '0' || v === '' || v === false || v === 0n;
}

function bytesOf(v: unknown): Uint8Array {
  if (v instanceof Uint8Array) return v;
  // protobufjs took base64 text for bytes; so does this codec.
  if (typeof v === 'string') return Buffer.from(v, 'base64');
  throw new TypeError(`bytes expected, got ${typeof v}`);
}

function varintOf(v: unknown): number | string {
  if (typeof v === 'number') return Math.trunc(v);
  if (typeof v === 'bigint' || typeof v === 'string') return String(v);
  if (typeof v === 'boolean') return v ? 1 : 0;
  throw new TypeError(`an integer expected, got ${typeof v}`);
}

/**
 * The varint bytes of int64 strings beyond 2^53, which the writer converts through BigInt: the
 * cluster and member ids of every response header and lease ids repeat call after call.
 */
const bigVarints = new Map<string, Buffer>();
/** Most entries kept; the cache starts afresh beyond (it holds a few ids in practice). */
const MAX_BIG_VARINTS = 1024;

function writeVarint(v: unknown): void {
  if (typeof v !== 'string' || v.length < 16) {
    out.varint64(varintOf(v));
    return;
  }
  let bytes = bigVarints.get(v);
  if (bytes === undefined) {
    const start = out.pos;
    out.varint64(v);
    bytes = Buffer.from(out.buf.subarray(start, out.pos));
    if (bigVarints.size >= MAX_BIG_VARINTS) bigVarints.clear();
    bigVarints.set(v, bytes);
    return;
  }
  out.room(bytes.length);
  bytes.copy(out.buf, out.pos);
  out.pos += bytes.length;
}

/** Writes one value of `f`; `always`: also when it is the default (repeated elements, oneofs). */
function writeValue(f: Field, v: unknown, always: boolean): void {
  if (f.kind === 'message') {
    const at = out.begin(f.no);
    encodeBody(messageType(f.type), v as Record<string, unknown>);
    out.end(at);
    return;
  }
  if (!always && isZero(v)) return;
  if (f.wire === 0) {
    out.varint(f.no << 3);
    writeVarint(f.kind === 'bool' ? (v === true ? 1 : 0) : v);
  } else if (f.kind === 'string') {
    out.raw(f.no, Buffer.from(String(v), 'utf8'));
  } else {
    const bytes = bytesOf(v);
    if (always || bytes.length > 0) out.raw(f.no, bytes);
  }
}

function encodeBody(type: MessageType, m: Record<string, unknown>): void {
  for (const f of type.fields) {
    const v = m[f.name];
    if (v === undefined || v === null) continue;
    if (!f.repeated) writeValue(f, v, f.oneof !== undefined);
    else if (!Array.isArray(v) || v.length === 0) continue;
    else if (f.wire === 0) {
      const at = out.begin(f.no);
      for (const x of v) writeVarint(f.kind === 'bool' ? (x === true ? 1 : 0) : x);
      out.end(at);
    } else for (const x of v) writeValue(f, x, true);
  }
}

/** Encodes `value` as a message of type `name`; `framed`: as a gRPC message (prefix included). */
export function encodeMessage(name: string, value: unknown, framed = false): Buffer {
  const type = messageType(name);
  try {
    encodeBody(type, (value ?? {}) as Record<string, unknown>);
  } catch (err) {
    out.pos = 0;
    throw err;
  }
  return framed ? out.takeFramed() : out.take();
}

// ---- JSON (the HTTP gateway) --------------------------------------------------------------------

/** `NOT_EQUAL` and `NotEqual` alike. */
const squash = (name: string): string => name.replace(/_/g, '').toLowerCase();

function jsonScalar(f: Field, v: unknown, path: string): unknown {
  const bad = (): never => {
    throw ETCD.invalid(`${path}: ${JSON.stringify(v)} is not a valid ${f.kind === 'enum' ? f.type : f.kind}`);
  };
  switch (f.kind) {
    case 'int64':
    case 'uint64':
      if (typeof v === 'number' && Number.isInteger(v)) return String(v);
      if (typeof v === 'string' && /^-?\d+$/.test(v)) return v;
      return bad();
    case 'int32':
    case 'uint32':
      if (typeof v === 'number' && Number.isInteger(v)) return v;
      if (typeof v === 'string' && /^-?\d+$/.test(v)) return Number(v);
      return bad();
    case 'enum': {
      if (typeof v === 'number' && Number.isInteger(v)) return v;
      if (typeof v !== 'string') return bad();
      if (/^-?\d+$/.test(v)) return Number(v);
      const i = (ENUMS[f.type] ?? []).findIndex((name) => squash(name) === squash(v));
      return i >= 0 ? i : bad();
    }
    case 'bool':
      if (typeof v === 'boolean') return v;
      if (v === 'true' || v === 'false') return v === 'true';
      return bad();
    case 'string':
      return typeof v === 'string' ? v : bad();
    case 'bytes':
      return typeof v === 'string' ? Buffer.from(v, 'base64') : bad();
    case 'message':
      return fromJsonBody(messageType(f.type), v, path);
  }
}

function fromJsonBody(type: MessageType, json: unknown, path: string): Record<string, unknown> {
  if (json === null || typeof json !== 'object' || Array.isArray(json)) {
    throw ETCD.invalid(`${path}: an object expected for ${type.name}`);
  }
  const j = json as Record<string, unknown>;
  const m: Record<string, unknown> = {};
  for (const f of type.fields) {
    const v = j[f.name] ?? j[f.jsonName];
    if (v === undefined || v === null) continue;
    const at = `${path}.${f.name}`;
    if (!f.repeated) m[f.name] = jsonScalar(f, v, at);
    else if (Array.isArray(v)) m[f.name] = v.map((x, i) => jsonScalar(f, x, `${at}[${i}]`));
    else throw ETCD.invalid(`${at}: a list expected`);
  }
  return m;
}

/**
 * A gateway request body (JSON) as the bytes of a message of type `name`; unknown JSON fields are
 * skipped. Throws etcd's INVALID_ARGUMENT for a value of the wrong type.
 */
export function messageFromJson(name: string, json: unknown): Buffer {
  return encodeMessage(name, fromJsonBody(messageType(name), json ?? {}, name));
}

/** {@link readValue} in jsonpb's form: enums by name, bytes as base64, messages as JSON objects. */
function jsonValue(f: Field, r: ProtoReader): unknown {
  switch (f.kind) {
    case 'enum': {
      const n = r.enum();
      return ENUMS[f.type]?.[n] ?? n;
    }
    case 'bytes':
      return r.bytes().toString('base64');
    case 'message':
      return toJsonBody(messageType(f.type), r.sub());
    default:
      return readValue(f, r);
  }
}

/** A value jsonpb leaves out: the default of a field outside a oneof. */
function isJsonDefault(f: Field, v: unknown): boolean {
  if (f.oneof !== undefined || f.kind === 'message') return false;
  if (f.kind === 'enum') return v === ENUMS[f.type]?.[0] || v === 0;
  return isZero(v);
}

function toJsonBody(type: MessageType, r: ProtoReader): Record<string, unknown> {
  const seen = new Map<Field, unknown>();
  walk(type, r, jsonValue, (f, v) => {
    if (f.repeated) {
      const list = (seen.get(f) as unknown[] | undefined) ?? [];
      list.push(v);
      seen.set(f, list);
      return;
    }
    if (f.oneof !== undefined) for (const g of seen.keys()) if (g.oneof === f.oneof) seen.delete(g);
    seen.set(f, v);
  });
  // jsonpb writes fields in the order the message declares them.
  const m: Record<string, unknown> = {};
  for (const f of type.fields) {
    if (!seen.has(f)) continue;
    const v = seen.get(f);
    if (!f.repeated && isJsonDefault(f, v)) continue;
    m[f.name] = v;
  }
  return m;
}

/** The bytes of a message of type `name` as etcd's gateway writes it in JSON. */
export function messageToJson(name: string, buf: Buffer): Record<string, unknown> {
  return toJsonBody(messageType(name), new ProtoReader(buf, 0, buf.length));
}
