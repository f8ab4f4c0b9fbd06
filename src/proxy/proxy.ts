/**
 * One proxy in this process: the watched routing state plus one {@link ProxyServer}. The master
 * (master.ts) runs one of these in each worker process; tests and embedders call it directly.
 */
import { systemClock, type Clock } from '../clock.js';
import type { Store } from '../store/index.js';
import type { ProxyConfig } from './config.js';
import type { RoutingSource } from './routing-source.js';
import { HeldPublisher } from './held-publisher.js';
import { LineProxy } from './lines.js';
import { ProxyServer, type ListenTarget, type ProxyLogger } from './server.js';
import { openRoutingSource } from './store-routing-source.js';

export interface StartProxyOptions {
  readonly config: ProxyConfig;
  readonly store: Store;
  /** Default: the configuration's `listen` addresses. */
  readonly listen?: readonly ListenTarget[];
  /** Line-protocol listeners. Default: the configuration's `lines.listen` (when `lines` is set). */
  readonly lineListen?: readonly ListenTarget[];
  readonly clock?: Clock;
  readonly log?: ProxyLogger;
  readonly signal?: AbortSignal;
  /**
   * Publish the held queue sizes at `status/<service>/proxies/<id>` under a session lease, for the
   * dashboard (held-publisher.ts). `true`: id `<hostname>-<pid>`. Default: off.
   */
  readonly publishHeld?: boolean | { readonly id: string };
}

export interface Proxy {
  readonly server: ProxyServer;
  readonly source: RoutingSource;
  /** `host:port` per listener. */
  readonly addresses: readonly string[];
  /** `host:port` per line-protocol listener (`lines.listen`); empty without `lines`. */
  readonly lineAddresses: readonly string[];
  /** Stop accepting, answer what is in flight or held, close (see {@link ProxyServer.drain}). */
  drain(timeoutMs?: number): Promise<void>;
  /** Close now; idempotent. Does not close the store. */
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/**
 * Reads the routing state (resolves once the first full read is in memory), then listens.
 * @throws MusterError from the store (`MUSTER_UNAVAILABLE`…) or when an address is taken.
 */
export async function startProxy(options: StartProxyOptions): Promise<Proxy> {
  const { config } = options;
  const source = openRoutingSource(options.store, config.service, {
    root: config.root,
    ...(options.clock ? { clock: options.clock } : {}),
  });
  try {
    await source.ready(options.signal ? { signal: options.signal } : {});
    const server = new ProxyServer({
      config,
      source,
      ...(options.clock ? { clock: options.clock } : {}),
      ...(options.log ? { log: options.log } : {}),
    });
    const addresses = await server.listen(options.listen ?? config.listen).catch(async (err: unknown) => {
      await server.close();
      throw err;
    });
    const lines =
      config.lines === undefined
        ? undefined
        : new LineProxy(config, server.table, source, options.clock ?? systemClock);
    const lineAddresses =
      lines === undefined
        ? []
        : await lines.listen(options.lineListen).catch(async (err: unknown) => {
            await lines.close();
            await server.close();
            throw err;
          });
    const publisher =
      options.publishHeld === undefined || options.publishHeld === false
        ? undefined
        : new HeldPublisher({
            store: options.store,
            root: config.root ?? '/muster/',
            service: config.service,
            ...(options.publishHeld === true ? {} : { id: options.publishHeld.id }),
            sizes: () => server.held(),
            changes: (listener) => server.onHeld(listener),
            ...(options.clock ? { clock: options.clock } : {}),
            onError: (err) => options.log?.warn({ err }, 'could not publish the held queues'),
          });
    const close = async (): Promise<void> => {
      await lines?.close();
      await server.close();
      source.close();
      await publisher?.close();
    };
    return {
      server,
      source,
      addresses,
      lineAddresses,
      drain: async (timeoutMs = config.drainTimeoutMs) => {
        await Promise.all([lines?.drain(timeoutMs), server.drain(timeoutMs)]);
        source.close();
        await publisher?.close();
      },
      close,
      [Symbol.asyncDispose]: close,
    };
  } catch (err) {
    source.close();
    throw err;
  }
}
