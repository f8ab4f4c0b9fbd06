/**
 * etcd's v3 service definitions for the tests' own gRPC clients (`@grpc/grpc-js`), loaded with
 * `@grpc/proto-loader` from the `.proto` files the `etcd3` package ships: an independent codec, so
 * the tests speak to muster serve as any etcd client would. (muster serve itself needs neither: its
 * codecs are src/server/grpc/wire.ts and proto-codec.ts.)
 */
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import {
  credentials,
  loadPackageDefinition,
  makeGenericClientConstructor,
  type ServiceDefinition,
  type ServiceError,
} from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import protobuf from 'protobufjs';

/** The directory of etcd's `.proto` files (shipped with the `etcd3` package). */
export const ETCD_PROTO_DIR = join(
  dirname(createRequire(import.meta.url).resolve('etcd3/package.json')),
  'proto',
);

/** etcd's `rpc.proto` (and what it imports) as a protobufjs root, field names as in the `.proto`: the reference codec of the codec tests. */
export function etcdProtoRoot(): protobuf.Root {
  const root = new protobuf.Root();
  root.resolvePath = (_origin, target) => (target.startsWith('/') ? target : join(ETCD_PROTO_DIR, target));
  return root.loadSync(join(ETCD_PROTO_DIR, 'rpc.proto'), { keepCase: true });
}

export interface EtcdServices {
  readonly KV: ServiceDefinition;
  readonly Watch: ServiceDefinition;
  readonly Lease: ServiceDefinition;
  readonly Cluster: ServiceDefinition;
  readonly Maintenance: ServiceDefinition;
  readonly Auth: ServiceDefinition;
}

let loaded: EtcdServices | undefined;

/**
 * The definitions, loaded once: field names as in the `.proto` (`create_revision`), 64-bit integers
 * as decimal strings, enums as numbers, oneofs naming their set member.
 */
export function etcdServices(): EtcdServices {
  if (loaded !== undefined) return loaded;
  const definition = loadSync(join(ETCD_PROTO_DIR, 'rpc.proto'), {
    keepCase: true,
    longs: String,
    defaults: true,
    oneofs: true,
  });
  const pkg = loadPackageDefinition(definition) as unknown as {
    etcdserverpb: Record<keyof EtcdServices, { service: ServiceDefinition }>;
  };
  const s = pkg.etcdserverpb;
  loaded = {
    KV: s.KV.service,
    Watch: s.Watch.service,
    Lease: s.Lease.service,
    Cluster: s.Cluster.service,
    Maintenance: s.Maintenance.service,
    Auth: s.Auth.service,
  };
  return loaded;
}

/** The response header fields the crash tests read. */
export interface KvHeader {
  revision: string;
  member_id: string;
}

/** The KV calls the crash tests make, as a grpc-js client of etcd's KV service has them. */
export interface KvClient {
  close(): void;
  Put(req: unknown, cb: (err: ServiceError | null, res: { header: KvHeader }) => void): void;
  Txn(
    req: unknown,
    cb: (err: ServiceError | null, res: { header: KvHeader; succeeded: boolean }) => void,
  ): void;
  Range(
    req: unknown,
    cb: (
      err: ServiceError | null,
      res: { header: KvHeader; kvs: { key: Buffer; value: Buffer; mod_revision: string }[] },
    ) => void,
  ): void;
}

/** A grpc-js KV client of the etcd (or muster serve) at `address`, without TLS. */
export function kvClient(address: string): KvClient {
  const Client = makeGenericClientConstructor(etcdServices().KV, 'KV');
  return new Client(address, credentials.createInsecure()) as unknown as KvClient;
}

/** A grpc-js callback call as a promise. */
export function call<T>(fn: (cb: (err: ServiceError | null, res: T) => void) => void): Promise<T> {
  return new Promise((resolve, reject) => fn((err, res) => (err ? reject(err) : resolve(res))));
}
