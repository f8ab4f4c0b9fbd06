/**
 * A proxy worker process: a daemon (Contract B: signals, logs) whose body receives its listening
 * handles and configuration from the master over IPC, runs one proxy, answers the master's calls,
 * and drains when told — or when the master goes away (the IPC channel closes).
 */
import { runDaemon, type Daemon, type DaemonContext } from '../daemon/index.js';
import { isMusterError } from '../errors.js';
import { onAbort } from '../util/abort.js';
import { DEFAULT_STORE_URL, openStore, type Store } from '../store/index.js';
import { loadProxyConfig } from './config.js';
import type { FromWorker, ToWorker } from './ipc.js';
import { startProxy, type Proxy } from './proxy.js';

/** 5 s: how long a worker whose master vanished keeps answering what it has before it exits. */
const ORPHAN_DRAIN_MS = 5_000;

function send(message: FromWorker): void {
  if (process.connected) process.send?.(message);
}

async function body(ctx: DaemonContext): Promise<{ stop(force: AbortSignal): Promise<void> }> {
  const handles: object[] = [];
  const lineHandles: object[] = [];
  let proxy: Proxy | undefined;
  let store: Store | undefined;
  let drainMs = ORPHAN_DRAIN_MS;

  const start = async (
    configFile: string,
    storeUrl: string | undefined,
    generation: number,
  ): Promise<void> => {
    try {
      const config = loadProxyConfig(configFile);
      drainMs = config.drainTimeoutMs;
      store = await openStore(storeUrl ?? config.store ?? process.env['MUSTER_STORE'] ?? DEFAULT_STORE_URL);
      proxy = await startProxy({
        // the master binds `lines.listen` as it binds `listen` (a reload that drops `lines` binds none)
        config: lineHandles.length === 0 ? { ...config, lines: undefined } : config,
        store,
        listen: handles.map((handle) => ({ handle })),
        lineListen: lineHandles.map((handle) => ({ handle })),
        publishHeld: true,
        log: ctx.log,
      });
      ctx.log.info(
        { generation, addresses: proxy.addresses, lineAddresses: proxy.lineAddresses },
        'worker accepting',
      );
      send({ type: 'ready', addresses: proxy.addresses, lineAddresses: proxy.lineAddresses });
    } catch (err) {
      send({
        type: 'failed',
        error: { message: (err as Error).message, ...(isMusterError(err) ? { code: err.code } : {}) },
      });
      ctx.fail(err);
    }
  };

  const answer = async (m: ToWorker & { type: 'call' }): Promise<void> => {
    try {
      const p = proxy;
      if (p === undefined) throw new Error('not started');
      const value =
        m.method === 'status'
          ? p.server.status()
          : m.method === 'held'
            ? p.server.held()
            : m.method === 'explain'
              ? p.server.explain(m.arg ?? '')
              : await p.server.metrics.registry.getMetricsAsJSON();
      send({ type: 'result', id: m.id, value });
    } catch (err) {
      send({ type: 'result', id: m.id, error: (err as Error).message });
    }
  };

  process.on('message', (m: ToWorker, handle: unknown) => {
    switch (m.type) {
      case 'listen':
        (m.kind === 'lines' ? lineHandles : handles)[m.index] = handle as object;
        break;
      case 'start':
        void start(m.configFile, m.storeUrl, m.generation);
        break;
      case 'drain':
        drainMs = m.timeoutMs;
        drainTold = true;
        void running.daemon?.stop();
        break;
      case 'call':
        void answer(m);
        break;
    }
  });
  // the master tells us to drain by message; the runtime stops us (stopOnDisconnect) when it vanishes
  onAbort(ctx.stopping, () => {
    if (!process.connected) drainMs = Math.min(drainMs, ORPHAN_DRAIN_MS);
  });

  return {
    async stop(force) {
      const off = onAbort(force, () => void proxy?.close());
      await proxy?.drain(drainMs);
      await store?.close();
      off();
      ctx.log.info({}, 'worker drained');
      // the IPC channel is the last handle keeping the process alive
      if (process.connected) process.disconnect();
    },
  };
}

let drainTold = false;
const running: { daemon?: Daemon } = {};
// the drain timeout (from the configuration) bounds the drain; the runtime's deadline is only a backstop
const daemon = await runDaemon(
  { name: 'proxy-worker', admin: false, stopOnDisconnect: true, shutdownTimeout: '1h' },
  body,
);
running.daemon = daemon;
if (drainTold) void daemon.stop();
process.exitCode = await daemon.done;
