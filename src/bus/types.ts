/**
 * Options, defaults and public types of the bus (docs/bus.md).
 */
import type { Registry } from 'prom-client';
import type { Clock } from '../clock.js';
import type { Store } from '../store/index.js';
import type { Duration } from '../util/duration.js';

/** 4 MiB: job descriptions and results are kilobytes; a bigger message is better sent as a reference. */
export const DEFAULT_MAX_FRAME_BYTES = 4 * 1024 * 1024;
/**
 * 8 MiB unsent per peer: two maximal frames plus thousands of small ones — a few seconds of a healthy
 * peer's traffic, so a peer that stops reading is refused (calls) or dropped (publications) within
 * seconds instead of growing the process without bound.
 */
export const DEFAULT_MAX_QUEUE_BYTES = 8 * 1024 * 1024;
/** 500 ms between heartbeats: a few bytes per second per connection. */
export const DEFAULT_HEARTBEAT_INTERVAL_MS = 500;
/**
 * 1.5 s of silence closes a connection: three heartbeats missed, so a SIGSTOPped or partitioned
 * peer is detected within 2 s (the goal), while a GC pause of a second does not trip it.
 */
export const DEFAULT_HEARTBEAT_TIMEOUT_MS = 1500;
/** 5 s per call unless the caller says otherwise: longer than any healthy call, shorter than a user's patience. */
export const DEFAULT_CALL_TIMEOUT_MS = 5000;
/** 2 s to connect and exchange hellos: loopback and LAN peers answer in milliseconds. */
export const DEFAULT_CONNECT_TIMEOUT_MS = 2000;
/** 1,024 calls executing at once per served service before new ones get `MUSTER_OVERLOADED`. */
export const DEFAULT_MAX_IN_FLIGHT = 1024;
/** 10,000 keyed calls held (owner moving or unknown) at once per bus before `MUSTER_OVERLOADED`. */
export const DEFAULT_MAX_HELD_CALLS = 10_000;
/**
 * 60 s of de-duplication memory per topic: redundant publishers send the same id within
 * milliseconds of each other; a minute covers a publisher that lags by seconds.
 */
export const DEFAULT_DEDUP_WINDOW_MS = 60_000;
/** 100,000 remembered ids per topic (about 10 MB at most) bound the window under a flood. */
export const DEFAULT_DEDUP_MAX_IDS = 100_000;
/** 1 s after a connection to an address failed, calls prefer other instances. */
export const DEFAULT_DOWN_BACKOFF_MS = 1000;

/** A pino-compatible logger (only what the bus uses). */
export interface BusLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

/** statsd settings (hot-shots). */
export interface StatsdOptions {
  host?: string;
  port?: number;
  /** Default: `muster.bus.`. */
  prefix?: string;
}

export interface BusOptions {
  /** Node id (the instance id in every record this bus writes). Default: `<host>-<pid>-<random>`. */
  id?: string;
  /** Interface to listen on. Default: 127.0.0.1. */
  host?: string;
  /** Port. Default: 0 (the OS picks; the address is published in membership). */
  port?: number;
  /** Host to advertise instead of the bound address. */
  advertiseHost?: string;
  /**
   * The whole `host:port` to publish instead of the bound one (a port forward, a NAT, a test's fault
   * proxy). Peers connect there and must reach this node's listener through it. Default: none.
   */
  advertise?: string;
  /** Shared secret every peer must present in its hello. Default: none (anyone may connect). */
  token?: string;
  /**
   * TLS between peers (docs/bus.md, *TLS*). A bus-wide setting: every peer of a bus must use it or
   * none — a plain peer and a TLS peer refuse each other with `MUSTER_TLS_HANDSHAKE`. Default: none.
   */
  tls?: BusTlsOptions;
  /** Key root. Default: `/muster/`. */
  root?: string;
  /** Session TTL of the bus's records. Default: the membership default (3 s). */
  ttl?: Duration;
  /** Default: {@link DEFAULT_MAX_FRAME_BYTES}. */
  maxFrameBytes?: number;
  /** Default: {@link DEFAULT_MAX_QUEUE_BYTES}. */
  maxQueueBytes?: number;
  /** Default: {@link DEFAULT_HEARTBEAT_INTERVAL_MS}. */
  heartbeatInterval?: Duration;
  /** Default: {@link DEFAULT_HEARTBEAT_TIMEOUT_MS}. */
  heartbeatTimeout?: Duration;
  /** Default call timeout. Default: {@link DEFAULT_CALL_TIMEOUT_MS}. */
  callTimeout?: Duration;
  /** Default: {@link DEFAULT_CONNECT_TIMEOUT_MS}. */
  connectTimeout?: Duration;
  /** Default: {@link DEFAULT_MAX_HELD_CALLS}. */
  maxHeldCalls?: number;
  /** Prometheus registry for the bus metrics. Default: a registry of its own (`bus.metrics`). */
  metrics?: Registry;
  /** Also send metrics to statsd (the seed's choice). Default: off. */
  statsd?: StatsdOptions;
  clock?: Clock;
  logger?: BusLogger;
}

/** TLS material of a bus node (PEM text or buffers; the CLI reads them from files). */
export interface BusTlsOptions {
  /** The certificate (chain) this node presents: to peers that dial it, and to a mutual-TLS peer it dials. */
  readonly cert: string | Buffer;
  /** Its private key. */
  readonly key: string | Buffer;
  /** The CA(s) peers' certificates must chain to. Default: Node's bundled public CAs. */
  readonly ca?: string | Buffer | readonly (string | Buffer)[];
  /** Mutual TLS: a node also requires and verifies the certificate of a peer that dials it. Default: false. */
  readonly mutual?: boolean;
}

/** Resolved options. */
export interface ResolvedBusOptions {
  readonly maxFrameBytes: number;
  readonly maxQueueBytes: number;
  readonly heartbeatIntervalMs: number;
  readonly heartbeatTimeoutMs: number;
  readonly callTimeoutMs: number;
  readonly connectTimeoutMs: number;
  readonly maxHeldCalls: number;
  readonly token: string | undefined;
  readonly tls: BusTlsOptions | undefined;
  readonly clock: Clock;
  readonly logger: BusLogger;
}

/** Who made a call. */
export interface Caller {
  /** The calling bus node's id. */
  readonly node: string;
  /** The calling bus node's advertised address. */
  readonly address: string;
}

/** What a handler receives besides the message. */
export interface HandlerContext {
  /** Aborts when the caller gave up (timeout, abort, connection lost) or the instance leaves. */
  readonly signal: AbortSignal;
  readonly caller: Caller;
  /** For keyed calls: the partition and the fencing token the call carried (= this owner's token). */
  readonly partition?: string;
  readonly token?: number;
}

/** A method handler: returns the result (JSON-serialisable) or throws a coded error. */
export type Handler = (message: unknown, context: HandlerContext) => unknown;

export interface CallOptions {
  /** Default: the bus's `callTimeout`. */
  timeout?: Duration;
  signal?: AbortSignal;
  /** Route to the current owner of this key's partition, fenced. */
  key?: string;
  /** The call may run twice: after a lost connection it is retried on another instance. Default: false. */
  idempotent?: boolean;
}

export interface BusPublishOptions {
  /** Message id for de-duplication across publishers. Default: a unique id. */
  id?: string;
  /** Drop the message (anywhere on its way) once it is older than this. Default: never. */
  ttl?: Duration;
  /**
   * At-least-once: wait until every subscriber node has run its handlers for the message, sending
   * it again (over a new connection if need be) until then or until `timeout`. Subscribers deliver
   * an id once, so repeats are harmless. Default: false (at-most-once, resolves once queued).
   */
  ack?: boolean;
  /** With `ack`: how long to keep trying. Default: the bus's `callTimeout`. */
  timeout?: Duration;
}

/** What a publication reached. */
export interface PublishResult {
  readonly id: string;
  /**
   * Subscriber nodes the message was written or queued to. Without `ack` this is not a delivery:
   * a message whose connection closes before the subscriber confirmed it is reported afterwards as
   * dropped with reason `unconfirmed` (the `dropped` event and `muster_bus_dropped_total`).
   */
  readonly sent: number;
  /** Subscriber nodes it was dropped for (queue full, not connected; with `ack`: not acknowledged in time). */
  readonly dropped: number;
  /** With `ack`: subscriber nodes that acknowledged it. */
  readonly acked: number;
}

export interface Delivery {
  readonly topic: string;
  readonly id: string;
  /** The publishing node. */
  readonly from: string;
}

export type SubscriptionHandler = (message: unknown, delivery: Delivery) => unknown;

export interface SubscribeOptions {
  /** Subscribers of one queue group share the messages: each goes to one of them. */
  queueGroup?: string;
  /** Default: {@link DEFAULT_DEDUP_WINDOW_MS}. */
  dedupWindow?: Duration;
}

/** Why a message or connection was dropped, as reported by the `dropped` event. */
export interface DropEvent {
  readonly peer: string;
  readonly topic: string;
  readonly id: string;
  /**
   * `unconfirmed`: written to the subscriber's connection, which then closed (heartbeat timeout,
   * crash, partition) before the subscriber confirmed receiving it — it may or may not have been
   * delivered. The others: not delivered.
   */
  readonly reason: 'queue-full' | 'expired' | 'not-connected' | 'not-acknowledged' | 'unconfirmed';
}

export type { Store };
