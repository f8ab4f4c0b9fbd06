/**
 * A proxy worker process: receives its listening handles and configuration from the master, runs
 * one proxy, answers the master's calls, and drains when told (or when the master goes away).
 */
import { pino } from 'pino';
import { isMusterError } from '../errors.js';
import { DEFAULT_STORE_URL, openStore, type Store } from '../store/index.js';
import { loadProxyConfig } from './config.js';
import type { FromWorker, ToWorker } from './ipc.js';
import { startProxy, type Proxy } from './proxy.js';

const handles: object[] = [];
let proxy: Proxy | undefined;
let store: Store | undefined;
let draining: Promise<void> | undefined;
const log = pino(
  { name: 'muster-proxy', level: process.env['MUSTER_LOG_LEVEL'] ?? 'info' },
  pino.destination(2),
).child({
  worker: process.pid,
});

function send(message: FromWorker): void {
  if (process.connected) process.send?.(message);
}

async function start(configFile: string, storeUrl: string | undefined, generation: number): Promise<void> {
  try {
    const config = loadProxyConfig(configFile);
    store = await openStore(storeUrl ?? config.store ?? process.env['MUSTER_STORE'] ?? DEFAULT_STORE_URL);
    proxy = await startProxy({ config, store, listen: handles.map((handle) => ({ handle })), log });
    log.info({ generation, addresses: proxy.addresses }, 'worker accepting');
    send({ type: 'ready', addresses: proxy.addresses });
  } catch (err) {
    log.error({ err }, 'worker failed to start');
    send({
      type: 'failed',
      error: { message: (err as Error).message, ...(isMusterError(err) ? { code: err.code } : {}) },
    });
    await store?.close();
    process.exit(1);
  }
}

function drain(timeoutMs: number): Promise<void> {
  draining ??= (async () => {
    try {
      await proxy?.drain(timeoutMs);
      await store?.close();
    } finally {
      log.info({}, 'worker drained');
      process.exit(0);
    }
  })();
  return draining;
}

async function answer(m: ToWorker & { type: 'call' }): Promise<void> {
  const p = proxy;
  try {
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
}

process.on('message', (m: ToWorker, handle: unknown) => {
  switch (m.type) {
    case 'listen':
      handles[m.index] = handle as object;
      break;
    case 'start':
      void start(m.configFile, m.storeUrl, m.generation);
      break;
    case 'drain':
      void drain(m.timeoutMs);
      break;
    case 'call':
      void answer(m);
      break;
  }
});
// the master is gone (crashed or killed): finish what is in flight, briefly, then go
process.on('disconnect', () => void drain(5000));
process.on('SIGTERM', () => void drain(5000));
// signals are the master's business (it forwards what workers need over IPC)
process.on('SIGINT', () => undefined);
process.on('SIGHUP', () => undefined);
