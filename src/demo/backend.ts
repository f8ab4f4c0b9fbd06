/**
 * The store behind `muster demo`: the embedded `muster serve` started in-process with a temporary
 * data directory, a real etcd started by the test harness, or a store the user names with `--store`.
 * Workers reach it through a fault proxy so the demo can pause it.
 */

/** The pausable TCP proxy in front of the store (what the demo uses of `muster/testing`'s FaultProxy). */
export interface DemoProxy {
  readonly endpoint: string;
  pause(): void;
  pass(): void;
  close(): Promise<void>;
}

/**
 * How the demo starts its store and proxy. The CLI passes `muster/testing`'s harnesses
 * (`startEtcd`, `startFaultProxy`, `startTempServe`); the demo itself does not import the testing
 * capability, so the boundary stays one-way (testing may use anything; nothing but the CLI and
 * tests uses testing).
 */
export interface DemoLaunchers {
  startEtcd(): Promise<{
    readonly url: string;
    readonly endpoints: readonly string[];
    close(): Promise<void>;
  }>;
  startFaultProxy(options: { target: string }): Promise<DemoProxy>;
  startTempServe(): Promise<{
    readonly url: string;
    readonly endpoint: string;
    readonly dataDir: string;
    close(): Promise<void>;
  }>;
}

export interface DemoBackend {
  /** What runs the store, for the banner. */
  readonly description: string;
  /** Direct URL (for the publisher). */
  readonly url: string;
  /** URL through the fault proxy (for the workers). */
  readonly workerUrl: string;
  readonly proxy: DemoProxy;
  close(): Promise<void>;
}

/**
 * Starts the demo's store: `muster serve` in-process (default) or a real etcd from the harness
 * (`engine: 'etcd'`). `url`: use this existing single-endpoint store instead.
 */
export async function startDemoBackend(
  launchers: DemoLaunchers,
  url?: string,
  engine: 'serve' | 'etcd' = 'serve',
): Promise<DemoBackend> {
  if (url !== undefined) {
    const endpoint = url.replace(/^etcd:\/\//, '').split(',')[0] ?? '';
    return withProxy(launchers, `the store at ${url}`, url, endpoint, async () => undefined);
  }
  if (engine === 'serve') return startServe(launchers);
  const etcd = await launchers.startEtcd();
  const endpoint = etcd.endpoints[0] as string;
  return withProxy(launchers, 'etcd (started by the muster test harness)', etcd.url, endpoint, () =>
    etcd.close(),
  );
}

async function withProxy(
  launchers: DemoLaunchers,
  description: string,
  url: string,
  endpoint: string,
  closeStore: () => Promise<void>,
): Promise<DemoBackend> {
  const proxy = await launchers.startFaultProxy({ target: endpoint });
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
async function startServe(launchers: DemoLaunchers): Promise<DemoBackend> {
  const serve = await launchers.startTempServe();
  return withProxy(
    launchers,
    `muster serve (in-process, data in ${serve.dataDir})`,
    serve.url,
    serve.endpoint,
    () => serve.close(),
  );
}
