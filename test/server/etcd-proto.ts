/**
 * etcd's v3 service definitions for the tests' own gRPC clients (`@grpc/grpc-js`), loaded with
 * `@grpc/proto-loader` from the `.proto` files the `etcd3` package ships: an independent codec, so
 * the tests speak to muster serve as any etcd client would. (muster serve itself needs neither: its
 * codecs are src/server/grpc/wire.ts and proto-codec.ts.)
 */
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { loadPackageDefinition, type ServiceDefinition } from '@grpc/grpc-js';
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
