/**
 * The bus (brief §9, docs/bus.md): RPC and publish/subscribe between services over direct framed
 * TCP connections between instances found through membership — no broker to lose.
 */
export {
  openBus,
  Bus,
  BUS_TAG,
  DEFAULT_SERVE_GRACE_MS,
  type BusEvents,
  type ServeOptions,
  type Serving,
} from './bus.js';
export { topicService, DedupWindow } from './pubsub.js';
export { readBusTlsFiles, type BusTlsFiles } from './tls-files.js';
export { encodeFrame, FrameDecoder, Kind as FrameKind, HEADER_BYTES, PROTOCOL_VERSION } from './frame.js';
export {
  type BusOptions,
  type BusLogger,
  type BusTlsOptions,
  type CallOptions,
  type Caller,
  type Delivery,
  type DropEvent,
  type Handler,
  type HandlerContext,
  type BusPublishOptions,
  type PublishResult,
  type StatsdOptions,
  type SubscribeOptions,
  type SubscriptionHandler,
  DEFAULT_CALL_TIMEOUT_MS,
  DEFAULT_CONNECT_TIMEOUT_MS,
  DEFAULT_DEDUP_MAX_IDS,
  DEFAULT_DEDUP_WINDOW_MS,
  DEFAULT_DOWN_BACKOFF_MS,
  DEFAULT_HEARTBEAT_INTERVAL_MS,
  DEFAULT_HEARTBEAT_TIMEOUT_MS,
  DEFAULT_MAX_FRAME_BYTES,
  DEFAULT_MAX_HELD_CALLS,
  DEFAULT_MAX_IN_FLIGHT,
  DEFAULT_MAX_QUEUE_BYTES,
} from './types.js';
