/**
 * The store behind `muster demo`: the embedded `muster serve` started in-process with a temporary
 * data directory, a real etcd started by the test harness, or a store the user names with `--store`.
 * Workers reach it through a fault proxy so the demo can pause it.
 */
import { startEtcd } from '../testing/etcd-harness.js';
import { type FaultProxy, startFaultProxy } from '../testing/fault-proxy.js';
import { startTempServe } from '../testing/serve-harness.js';

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

/**
 * Starts the demo's store: `muster serve` in-process (default) or a real etcd from the harness
 * (`engine: 'etcd'`). `url`: use this existing single-endpoint store instead.
 */
export async function startDemoBackend(
  url?: string,
  engine: 'serve' | 'etcd' = 'serve',
): Promise<DemoBackend> {
  if (url !== undefined) {
    const endpoint = url.replace(/^etcd:\/\//, '').split(',')[0] ?? '';
    return withProxy(`the store at ${url}`, url, endpoint, async () => undefined);
  }
  if (engine === 'serve') return startServe();
  const etcd = await startEtcd();
  const endpoint = etcd.endpoints[0] as string;
  return withProxy('etcd (started by the muster test harness)', etcd.url, endpoint, () => etcd.close());
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

/** `muster serve` in-process, with a temporary data directory. */
async function startServe(): Promise<DemoBackend> {
  const serve = await startTempServe();
  return withProxy(`muster serve (in-process, data in ${serve.dataDir})`, serve.url, serve.endpoint, () =>
    serve.close(),
  );
}
