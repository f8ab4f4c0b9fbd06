/**
 * `muster proxy`: the shard-routing reverse proxy (brief §8, docs/proxy.md). Routes each request by
 * its key to the route pin's instance or the key's partition owner, holds GET/HEAD while the
 * destination is unavailable, and reloads without dropping a request.
 */
export { startProxy, type Proxy, type StartProxyOptions } from './proxy.js';
export {
  ProxyServer,
  type ProxyServerOptions,
  type ProxyServerState,
  type ListenTarget,
  type ProxyLogger,
} from './server.js';
export {
  loadProxyConfig,
  parseProxyConfig,
  proxyConfigFrom,
  type ProxyConfig,
  type HoldSettings,
  type UpstreamSettings,
  type ClientSettings,
  type LinesSettings,
  DEFAULT_HOLD_TIMEOUT_MS,
  DEFAULT_RELEASE_RATE,
  DEFAULT_MAX_HELD_PER_DESTINATION,
  DEFAULT_MAX_HELD_TOTAL,
  DEFAULT_PROBE_INTERVAL_MS,
  DEFAULT_RETRY_AFTER_SECONDS,
  DEFAULT_DRAIN_TIMEOUT_MS,
} from './config.js';
export { PROXY_CONFIG_SCHEMA } from './config-schema.js';
export { LineProxy, keyOfMessage, MAX_LINE_BYTES, MAX_QUEUED_LINES } from './lines.js';
export { parseKeySpec, extractKey, isValidKey, type KeySpec } from './key.js';
export { RoutingTable, type Resolution } from './table.js';
export type { RoutingSource, RouteOwner, RouteInstance } from './routing-source.js';
export { openRoutingSource } from './store-routing-source.js';
export {
  pinRoute,
  unpinRoute,
  explainRoute,
  drainInstance,
  undrainInstance,
  type RouteOptions,
} from './routes.js';
export { ProxyMaster, type ProxyMasterOptions, DEFAULT_WORKER_READY_TIMEOUT_MS } from './master.js';
export {
  HeldPublisher,
  HELD_PUBLISH_INTERVAL_MS,
  parseProxyRecord,
  proxyRecordKey,
  type ProxyRecord,
} from './held-publisher.js';
