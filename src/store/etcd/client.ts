/**
 * The etcd members as one client: a {@link GrpcChannel} per member, which member each call goes to,
 * the per-member circuit breaker (breaker.ts), and authentication.
 *
 * A call goes to one member and is not repeated elsewhere here: the engine decides what may be
 * retried (reads) and what may not (writes that might have been applied). The member is chosen at
 * random among those that may take it — breaker closed, or half-open with its one probe free (with
 * several members), and channel not backing off after failed connection attempts (grpc.ts) — and,
 * among those, the ones with the fewest failures in a row (a retry does not go back to the member
 * that just failed while another has not). When none may take it the call fails at once with
 * {@link NoEndpointError}, never sent. A recoverable failure (unreachable, timed out, no leader)
 * counts against the member's breaker and makes its channel connect again for the next call. A
 * single member has no breaker: there is nowhere else to go; its channel's back-off still applies.
 * With a user, the first call authenticates (each member in turn until one answers) and every call
 * carries the `token`; a call refused for an invalid or expired token authenticates again and is
 * sent once more (it was not applied).
 */
import { type Attempt, Breaker, type BreakerState } from './breaker.js';
import {
  BackoffError,
  ClosedError,
  GrpcChannel,
  type GrpcChannelOptions,
  GrpcError,
  type GrpcStream,
  type Metadata,
  Status,
} from './grpc.js';
import { type AuthenticateResponse, decode, encode } from './rpc-codec.js';

export { BREAKER_BACKOFF, BREAKER_FAILURES } from './breaker.js';

/** gRPC codes after which a member is suspect: etcd3's `RecoverableError` set. */
const RECOVERABLE = new Set<number>([
  Status.CANCELLED,
  Status.UNKNOWN,
  Status.DEADLINE_EXCEEDED,
  Status.RESOURCE_EXHAUSTED,
  10, // ABORTED
  Status.INTERNAL,
  Status.UNAVAILABLE,
]);

/**
 * No member may take a call right now (each one's breaker is open or its probe is out, or its
 * channel is backing off): nothing was sent. `details` says, member by member, for how long.
 */
export class NoEndpointError extends GrpcError {
  constructor(why: string) {
    super(
      Status.UNAVAILABLE,
      `no etcd endpoint is reachable right now (every endpoint failed recently: ${why})`,
      { neverSent: true },
    );
    this.name = 'NoEndpointError';
  }
}

/** Whether `err` counts against the member that produced it. */
export function isRecoverable(err: unknown): boolean {
  return (
    err instanceof GrpcError && RECOVERABLE.has(err.code) && !err.message.includes('Cancelled on client')
  );
}

/** True when the call was cancelled by its own caller (it says nothing about the member). */
function isCancelled(err: unknown): boolean {
  return err instanceof GrpcError && err.code === Status.CANCELLED;
}

/** True when etcd refused the call's auth token (expired or from before a restart). */
function isInvalidToken(err: unknown): boolean {
  return err instanceof GrpcError && err.details.includes('invalid auth token');
}

export interface EtcdClientOptions {
  readonly endpoints: readonly string[];
  readonly tls?: { readonly ca?: Buffer; readonly cert?: Buffer; readonly key?: Buffer } | undefined;
  readonly auth?: { readonly username: string; readonly password: string } | undefined;
  readonly keepAliveMs: number;
  readonly keepAliveTimeoutMs: number;
  /** Deadline of the Authenticate call. */
  readonly requestTimeoutMs: number;
  /** Each member's connect timeout. Default: `CONNECT_TIMEOUT_MS` (grpc.ts). */
  readonly connectTimeoutMs?: GrpcChannelOptions['connectTimeoutMs'];
}

/** One member: its channel and breaker. */
export class Member {
  readonly endpoint: string;
  readonly channel: GrpcChannel;
  readonly breaker = new Breaker();

  constructor(channel: GrpcChannel) {
    this.channel = channel;
    this.endpoint = channel.endpoint;
  }

  /** Recoverable failures in a row (0 after a success). */
  get failures(): number {
    return this.breaker.failures;
  }

  /** The breaker's state now. */
  get state(): BreakerState {
    return this.breaker.state(performance.now());
  }

  /** Why it may not take a call now, or `undefined` when it may (`breaker` false: ignore it). */
  refusal(now: number, breaker: boolean): string | undefined {
    if (this.channel.state === 'backing-off')
      return `${this.endpoint} reconnects in ${Math.ceil(this.channel.retryAt - now)} ms`;
    if (!breaker || this.breaker.admits(now)) return undefined;
    return this.breaker.state(now) === 'open'
      ? `${this.endpoint} breaker open for ${Math.ceil(this.breaker.openUntil - now)} ms`
      : `${this.endpoint} breaker half-open, its probe is out`;
  }
}

/** What a call holds on its member, to report the outcome once. */
export interface Pick {
  readonly member: Member;
  readonly attempt: Attempt;
}

export class EtcdClient {
  readonly members: readonly Member[];
  readonly #opts: EtcdClientOptions;
  #token: Promise<Metadata> | undefined;
  #closed = false;

  constructor(opts: EtcdClientOptions) {
    this.#opts = opts;
    this.members = opts.endpoints.map(
      (endpoint) =>
        new Member(
          new GrpcChannel({
            endpoint,
            tls: opts.tls,
            keepAliveMs: opts.keepAliveMs,
            keepAliveTimeoutMs: opts.keepAliveTimeoutMs,
            connectTimeoutMs: opts.connectTimeoutMs,
          }),
        ),
    );
  }

  /**
   * One unary call to one member. Rejects with the call's {@link GrpcError}, or
   * {@link NoEndpointError} (nothing sent).
   */
  async unary<T>(
    path: string,
    message: Buffer,
    decodeResponse: (body: Buffer) => T,
    options: { deadline: number; signal?: AbortSignal | undefined },
  ): Promise<T> {
    const picked = this.pick();
    const { member } = picked;
    let verdict: boolean | undefined;
    try {
      for (let reauthenticated = false; ; reauthenticated = true) {
        const metadata = await this.#metadata();
        try {
          const res = await member.channel.unary(path, message, decodeResponse, { ...options, metadata });
          verdict = true;
          return res;
        } catch (err) {
          if (isInvalidToken(err) && !reauthenticated) {
            this.invalidateToken();
            continue;
          }
          // A call refused by the channel's back-off was not sent: it says nothing new.
          if (err instanceof BackoffError) verdict = undefined;
          else if (isRecoverable(err)) this.markFailed(picked);
          else verdict = isCancelled(err) ? undefined : true;
          throw err;
        }
      }
    } finally {
      this.#settle(picked, verdict);
    }
  }

  /**
   * Opens a bidirectional stream on one member (`prefer` first when it may take it). The stream's
   * first message counts as the member's success; report a failure with {@link markFailed}.
   */
  async stream<Req, Res>(
    path: string,
    encodeRequest: (r: Req) => Buffer,
    decodeResponse: (body: Buffer) => Res,
    extra: Metadata,
    prefer?: string,
  ): Promise<{ stream: GrpcStream<Req, Res> } & Pick> {
    const picked = this.pick(prefer);
    let stream: GrpcStream<Req, Res>;
    try {
      const metadata = await this.#metadata();
      stream = picked.member.channel.stream(path, encodeRequest, decodeResponse, { ...metadata, ...extra });
    } catch (err) {
      this.#settle(picked, undefined); // nothing was sent (the channel's back-off counts its failures)
      throw err;
    }
    stream.once('data', () => this.#settle(picked, true));
    // After the caller's own 'error' listeners (which may call markFailed): no verdict frees a probe.
    const release = (): void => queueMicrotask(() => this.#settle(picked, undefined));
    stream.on('error', release);
    stream.once('end', release);
    return { stream, ...picked };
  }

  /**
   * The member a call goes to (`prefer` when it may take it, else a random one among those that may
   * with the fewest failures in a row) and the call's claim on its breaker. Throws
   * {@link NoEndpointError} when none may, {@link ClosedError} after {@link close}.
   */
  pick(prefer?: string): Pick {
    if (this.#closed) throw new ClosedError('etcd client');
    const now = performance.now();
    const breaker = this.members.length > 1;
    if (breaker && prefer !== undefined) {
      const m = this.members.find((x) => x.endpoint === prefer);
      const attempt = m?.refusal(now, breaker) === undefined ? m?.breaker.admit(now) : undefined;
      if (m !== undefined && attempt !== undefined) return { member: m, attempt };
    }
    if (!breaker) {
      // One member: its channel fails the call itself when it is backing off (with why).
      const m = this.members[0] as Member;
      return { member: m, attempt: { probe: false, settled: false } };
    }
    let ok = this.members.filter((m) => m.refusal(now, breaker) === undefined);
    const fewest = Math.min(...ok.map((m) => m.failures));
    ok = ok.filter((m) => m.failures === fewest);
    const m = ok[Math.floor(Math.random() * ok.length)];
    const attempt = m?.breaker.admit(now);
    if (m === undefined || attempt === undefined)
      throw new NoEndpointError(this.members.map((x) => x.refusal(now, breaker)).join('; '));
    return { member: m, attempt };
  }

  /** Counts a failure against the picked member and makes its channel connect again for the next call. */
  markFailed(picked: Pick): void {
    this.#settle(picked, false);
    picked.member.channel.reset();
  }

  /** The next call authenticates again. */
  invalidateToken(): void {
    this.#token = undefined;
  }

  close(): void {
    this.#closed = true;
    for (const m of this.members) m.channel.close();
  }

  /** Reports a call's outcome to its member's breaker (with several members; once per call). */
  #settle(picked: Pick, ok: boolean | undefined): void {
    if (this.members.length > 1) picked.member.breaker.settle(picked.attempt, ok, performance.now());
  }

  /** The auth metadata (`token`), fetched once and shared until invalidated. */
  #metadata(): Promise<Metadata> {
    const auth = this.#opts.auth;
    if (auth === undefined) return Promise.resolve({});
    this.#token ??= this.#authenticate(auth).catch((err: unknown) => {
      this.#token = undefined;
      throw err;
    });
    return this.#token;
  }

  async #authenticate(auth: { username: string; password: string }): Promise<Metadata> {
    let lastError: unknown;
    const request = encode.authenticate({ name: auth.username, password: auth.password });
    for (const member of this.members) {
      try {
        const res: AuthenticateResponse = await member.channel.unary(
          '/etcdserverpb.Auth/Authenticate',
          request,
          decode.authenticate,
          { deadline: Date.now() + this.#opts.requestTimeoutMs },
        );
        return { token: res.token };
      } catch (err) {
        lastError = err;
      }
    }
    throw lastError;
  }
}
