/**
 * The shapes of a gRPC call as serve's handlers see them — status codes, metadata, unary and
 * streaming calls — the few parts of `@grpc/grpc-js`'s server API the handlers used, now served by
 * transport.ts (gRPC) and gateway.ts (HTTP/JSON) alike.
 */
import type { EventEmitter } from 'node:events';

/** gRPC status codes (the numbers on the wire). */
export const status = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
} as const;
export type StatusCode = (typeof status)[keyof typeof status];

/** A status to end a call with (what handlers pass to callbacks and `emit('error')`). */
export interface StatusLike {
  code?: number | undefined;
  details?: string | undefined;
  message?: string | undefined;
}

/**
 * A call's metadata: its request headers by lower-case name. A header sent twice comes as one value
 * joined with `, ` (HTTP/2's rule, which h2.ts follows).
 */
export class Metadata {
  readonly #values: Readonly<Record<string, string | undefined>>;

  constructor(values: Readonly<Record<string, string | undefined>> = {}) {
    this.#values = values;
  }

  /** The values of `name`: none, or the one (joined) value. */
  get(name: string): string[] {
    const v = this.#values[name];
    return v === undefined ? [] : [v];
  }
}

/** A unary call: the decoded request and the call's metadata. */
export interface UnaryCall<Req = unknown> {
  readonly request: Req;
  readonly metadata: Metadata;
}

/** Ends a unary call: with an error status, or (`err` null) with the response. */
export type UnaryCallback<Res = unknown> = (err: StatusLike | null | undefined, value?: Res) => void;

export type UnaryHandler<Req = unknown, Res = unknown> = (
  call: UnaryCall<Req>,
  callback: UnaryCallback<Res>,
) => void;

/**
 * A streaming call: `'data'` (each request of a client stream), `'end'` (the client half-closed),
 * `'cancelled'` (the client went away or the deadline passed), `'drain'` (a `write` that returned
 * false may go on); `write(response)`, `end()` (status OK) and `emit('error', status)` (ends the
 * call with that status). A server-streaming call has its one request in `request`.
 */
export interface StreamCall<Req = unknown, Res = unknown> extends EventEmitter {
  request: Req;
  readonly metadata: Metadata;
  write(value: Res): boolean;
  end(): void;
}

export type StreamHandler<Req = unknown, Res = unknown> = (call: StreamCall<Req, Res>) => void;

/**
 * A service's handlers by method name: unary ones ({@link UnaryHandler}) and streaming ones
 * ({@link StreamHandler}). The call parameter is `never` so that a handler typed for its own request
 * (`UnaryHandler<{ ID: string }>`) fits; the transport knows which shape each method has.
 */
export type ServiceImplementation = Record<string, (call: never, callback: UnaryCallback) => void>;
