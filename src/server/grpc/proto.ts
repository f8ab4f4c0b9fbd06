/**
 * The etcd v3 service definitions, loaded from the `.proto` files that ship with the `etcd3`
 * package (the same files its client uses), so the server and its clients cannot drift apart.
 */
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { loadPackageDefinition, type ServiceDefinition } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { decodeRequest, encodeResponse, encodeWatchResponse } from './wire.js';

/** The etcd services muster serves (every RPC of each; those not implemented answer UNIMPLEMENTED). */
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
 * Loads the definitions once per process. Field names stay as in the `.proto` (`create_revision`),
 * 64-bit integers are decimal strings, enums are numbers, and oneofs name their set member.
 */
export function etcdServices(): EtcdServices {
  if (loaded !== undefined) return loaded;
  const require = createRequire(import.meta.url);
  const protoDir = join(dirname(require.resolve('etcd3/package.json')), 'proto');
  const definition = loadSync(join(protoDir, 'rpc.proto'), {
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
    KV: withWireCodecs(s.KV.service),
    Watch: {
      ...s.Watch.service,
      Watch: { ...(s.Watch.service.Watch as object), responseSerialize: encodeWatchResponse },
    } as unknown as ServiceDefinition,
    Lease: s.Lease.service,
    Cluster: s.Cluster.service,
    Maintenance: s.Maintenance.service,
    Auth: s.Auth.service,
  };
  return loaded;
}

/**
 * The KV service with the hand-written codecs of wire.ts for its hot RPCs (same objects as the
 * loader's, a fraction of the CPU); Compact and every other service keep the loader's codecs.
 */
function withWireCodecs(kv: ServiceDefinition): ServiceDefinition {
  const out: Record<string, unknown> = { ...kv };
  for (const name of ['Range', 'Put', 'DeleteRange', 'Txn'] as const) {
    out[name] = {
      ...(kv[name] as object),
      requestDeserialize: decodeRequest[name],
      responseSerialize: encodeResponse[name],
    };
  }
  return out as ServiceDefinition;
}
