/**
 * The store behind `muster demo`: the embedded `muster serve` started in-process with a temporary
 * data directory when it is available, otherwise a real etcd started by the test harness, or a store
 * the user names with `--store`. Workers reach it through a fault proxy so the demo can pause it.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MusterError } from '../errors.js';
import { startEtcd } from '../testing/etcd-harness.js';
import { type FaultProxy, startFaultProxy } from '../testing/fault-proxy.js';

export interface DemoBackend {
  /** What runs the store, for the banner. */
  readonly description: string;
  /** Direct URL (for the publisher). */
  readonly url: string;
  /** URL through the fault proxy (for the workers). */
  readonly workerUrl: string;
  readonly proxy: FaultProxy;
  close(): Promise<void>;
}

interface ServerLike {
  readonly endpoint?: string;
  readonly url?: string;
  close(): Promise<void>;
}

/** Starts the demo's store. `url`: use this existing single-endpoint store instead. */
export async function startDemoBackend(url?: string): Promise<DemoBackend> {
  if (url !== undefined) {
    const endpoint = url.replace(/^etcd:\/\//, '').split(',')[0] ?? '';
    return withProxy(`the store at ${url}`, url, endpoint, async () => undefined);
  }
  const serve = await tryStartServe();
  if (serve !== undefined) return serve;
  const etcd = await startEtcd();
  const endpoint = etcd.endpoints[0] as string;
  return withProxy(
    `etcd (started by the muster test harness; muster serve is not built in)`,
    etcd.url,
    endpoint,
    () => etcd.close(),
  );
}

async function withProxy(
  description: string,
  url: string,
  endpoint: string,
  closeStore: () => Promise<void>,
): Promise<DemoBackend> {
  const proxy = await startFaultProxy({ target: endpoint });
  return {
    description,
    url,
    workerUrl: `etcd://${proxy.endpoint}`,
    proxy,
    close: async () => {
      await proxy.close();
      await closeStore();
    },
  };
}

/** `muster serve` in-process, if this build has it (src/server). */
async function tryStartServe(): Promise<DemoBackend | undefined> {
  const spec = '../server/index.js';
  let mod: { startServer?: (o: { dataDir: string; listen: string }) => Promise<ServerLike> };
  try {
    mod = (await import(spec)) as typeof mod;
  } catch {
    return undefined;
  }
  if (typeof mod.startServer !== 'function') return undefined;
  const dataDir = await mkdtemp(join(tmpdir(), 'muster-demo-'));
  const server = await mod.startServer({ dataDir, listen: '127.0.0.1:0' });
  const endpoint = server.endpoint ?? server.url?.replace(/^etcd:\/\//, '');
  if (endpoint === undefined) {
    await server.close();
    throw new MusterError('MUSTER_INTERNAL', 'muster serve started but reported no endpoint');
  }
  return withProxy(
    `muster serve (in-process, data in ${dataDir})`,
    `etcd://${endpoint}`,
    endpoint,
    async () => {
      await server.close();
      await rm(dataDir, { recursive: true, force: true });
    },
  );
}
