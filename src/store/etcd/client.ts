/**
 * The etcd members as one client: a {@link GrpcChannel} per member, which member each call goes to,
 * the per-member circuit breaker, and authentication.
 *
 * A call goes to one member (chosen at random among those with the fewest failures in a row,
 * skipping those whose breaker is open) and is not repeated elsewhere here: the engine decides what may be retried (reads) and
 * what may not (writes that might have been applied). With several members, one that failed
 * {@link BREAKER_FAILURES} times in a row (a recoverable failure: unreachable, timed out, no leader)
 * is skipped for {@link ENDPOINT_COOLDOWN_MS}, then tried again; a recoverable failure also makes its
 * channel connect again for the next call. A single member has no breaker: there is nowhere else to
 * go. With a user, the first call authenticates (each member in turn until one answers) and every
 * call carries the `token`; a call refused for an invalid or expired token authenticates again and
 * is sent once more (it was not applied).
 */
import { ClosedError, GrpcChannel, GrpcError, type GrpcStream, type Metadata, Status } from './grpc.js';
import { type AuthenticateResponse, decode, encode } from './rpc-codec.js';

/**
 * 5 s: how long a member that failed {@link BREAKER_FAILURES} times in a row is skipped while other
 * members are tried (etcd3's default, which this client replaced).
 */
export const ENDPOINT_COOLDOWN_MS = 5000;
/** 3 consecutive recoverable failures open a member's breaker (etcd3's default). */
export const BREAKER_FAILURES = 3;

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

/** Every member's breaker is open: nothing was sent. */
export class NoEndpointError extends GrpcError {
  constructor() {
    super(Status.UNAVAILABLE, 'no etcd endpoint is reachable right now (every endpoint failed recently)', {
      neverSent: true,
    });
    this.name = 'NoEndpointError';
  }
}

/** Whether `err` counts against the member that produced it. */
export function isRecoverable(err: unknown): boolean {
  return (
    err instanceof GrpcError && RECOVERABLE.has(err.code) && !err.message.includes('Cancelled on client')
  );
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
}

/** One member: its channel and breaker. */
export class Member {
  readonly endpoint: string;
  readonly channel: GrpcChannel;
  #failures = 0;
  #openedAt = 0;

  constructor(channel: GrpcChannel) {
    this.channel = channel;
    this.endpoint = channel.endpoint;
  }

  /** Recoverable failures in a row (0 after a success). */
  get failures(): number {
    return this.#failures;
  }

  /** False while its breaker is open. */
  available(now: number): boolean {
    return this.#failures < BREAKER_FAILURES || now - this.#openedAt >= ENDPOINT_COOLDOWN_MS;
  }

  succeeded(): void {
    this.#failures = 0;
  }

  failed(now: number): void {
    this.#failures++;
    if (this.#failures >= BREAKER_FAILURES) this.#openedAt = now;
  }
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
          }),
        ),
    );
  }

  /**
   * One unary call to one member (`prefer` first when given and available). Rejects with the
   * call's {@link GrpcError}, or {@link NoEndpointError}.
   */
  async unary<T>(
    path: string,
    message: Buffer,
    decodeResponse: (body: Buffer) => T,
    options: { deadline: number; signal?: AbortSignal | undefined },
  ): Promise<T> {
    const member = this.pick();
    for (let reauthenticated = false; ; reauthenticated = true) {
      const metadata = await this.#metadata();
      try {
        const res = await member.channel.unary(path, message, decodeResponse, { ...options, metadata });
        this.#healthy(member);
        return res;
      } catch (err) {
        if (isInvalidToken(err) && !reauthenticated) {
          this.invalidateToken();
          continue;
        }
        if (isRecoverable(err)) this.markFailed(member);
        else this.#healthy(member);
        throw err;
      }
    }
  }

  /** Opens a bidirectional stream on one member (`prefer` first when given and available). */
  async stream<Req, Res>(
    path: string,
    encodeRequest: (r: Req) => Buffer,
    decodeResponse: (body: Buffer) => Res,
    extra: Metadata,
    prefer?: string,
  ): Promise<{ stream: GrpcStream<Req, Res>; member: Member }> {
    const member = this.pick(prefer);
    const metadata = await this.#metadata();
    const stream = member.channel.stream(path, encodeRequest, decodeResponse, { ...metadata, ...extra });
    return { stream, member };
  }

  /** The member a call goes to: `prefer` when available, else a random available one. */
  pick(prefer?: string): Member {
    if (this.#closed) throw new ClosedError('etcd client');
    const now = Date.now();
    if (prefer !== undefined) {
      const m = this.members.find((x) => x.endpoint === prefer);
      if (m !== undefined && this.#available(m, now)) return m;
    }
    // Among the available members, those with the fewest failures in a row: a retry does not go
    // back to the member that just failed while another has not.
    let ok = this.members.filter((m) => this.#available(m, now));
    const fewest = Math.min(...ok.map((m) => m.failures));
    ok = ok.filter((m) => m.failures === fewest);
    const m = ok[Math.floor(Math.random() * ok.length)];
    if (m === undefined) throw new NoEndpointError();
    return m;
  }

  /** Counts a failure against `member` and makes its channel connect again for the next call. */
  markFailed(member: Member): void {
    if (this.members.length > 1) member.failed(Date.now());
    member.channel.reset();
  }

  /** The next call authenticates again. */
  invalidateToken(): void {
    this.#token = undefined;
  }

  close(): void {
    this.#closed = true;
    for (const m of this.members) m.channel.close();
  }

  #healthy(member: Member): void {
    member.succeeded();
  }

  #available(m: Member, now: number): boolean {
    return this.members.length === 1 || m.available(now);
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
