/**
 * Single keep-alive round trips over one shared LeaseKeepAlive stream.
 *
 * etcd renews leases only through a bidirectional stream; opening one per renewal would cost a
 * stream set-up each time, so one stream is shared and answers are matched to requests by lease id
 * (etcd answers each stream's requests in order). A renewal that does not come back within its
 * deadline fails with `MUSTER_TIMEOUT` and tears the stream down, so a black-holed connection is
 * replaced on the next renewal, possibly by one to another member. Nothing here re-grants a lease:
 * a renewal of a lease that etcd no longer has (etcd answers TTL 0) fails with
 * `MUSTER_LEASE_NOT_FOUND`.
 */
import type { ClientDuplexStream } from '@grpc/grpc-js';
import type { ILeaseKeepAliveRequest, ILeaseKeepAliveResponse } from 'etcd3';
import { abortedError, MusterError } from '../../errors.js';
import { onAbort } from '../../util/abort.js';
import { fromEtcdError } from './errors.js';

export type KeepAliveStream = ClientDuplexStream<ILeaseKeepAliveRequest, ILeaseKeepAliveResponse>;

interface Pending {
  readonly resolve: (ttl: number) => void;
  readonly reject: (err: unknown) => void;
}

export class KeepAliveChannel {
  readonly #open: () => Promise<KeepAliveStream>;
  #stream: Promise<KeepAliveStream> | undefined;
  readonly #pending = new Map<string, Pending[]>();
  #closed = false;

  constructor(open: () => Promise<KeepAliveStream>) {
    this.#open = open;
  }

  /**
   * Renews lease `id` once; resolves to the TTL etcd renewed it for. Rejects with
   * `MUSTER_LEASE_NOT_FOUND`, `MUSTER_TIMEOUT` after `timeoutMs`, `MUSTER_UNAVAILABLE`, or
   * `MUSTER_ABORTED`.
   */
  renew(id: string, timeoutMs: number, signal?: AbortSignal): Promise<number> {
    if (this.#closed) return Promise.reject(new MusterError('MUSTER_CLOSED', 'the etcd store was closed'));
    if (signal?.aborted) return Promise.reject(abortedError(signal));
    return new Promise<number>((resolve, reject) => {
      let settled = false;
      const done = (): void => {
        settled = true;
        clearTimeout(timer);
        offAbort();
        const list = this.#pending.get(id);
        const i = list?.indexOf(entry) ?? -1;
        if (list !== undefined && i >= 0) {
          list.splice(i, 1);
          if (list.length === 0) this.#pending.delete(id);
        }
      };
      const entry: Pending = {
        resolve: (ttl) => {
          if (settled) return;
          done();
          resolve(ttl);
        },
        reject: (err) => {
          if (settled) return;
          done();
          // eslint-disable-next-line @typescript-eslint/prefer-promise-reject-errors
          reject(err);
        },
      };
      const timer = setTimeout(() => {
        entry.reject(
          new MusterError(
            'MUSTER_TIMEOUT',
            `etcd did not answer the keep-alive of lease ${id} within ${timeoutMs} ms`,
            {
              details: { lease: id },
            },
          ),
        );
        this.#reset(); // the connection may be black-holed: the next renewal opens a new one
      }, timeoutMs);
      const offAbort = onAbort(signal, () => entry.reject(abortedError(signal as AbortSignal)));
      const list = this.#pending.get(id);
      if (list === undefined) this.#pending.set(id, [entry]);
      else list.push(entry);
      this.#streamFor().then(
        (stream) => {
          if (!settled) stream.write({ ID: id });
        },
        (err: unknown) => entry.reject(fromEtcdError(err, { lease: id })),
      );
    });
  }

  #streamFor(): Promise<KeepAliveStream> {
    if (this.#stream !== undefined) return this.#stream;
    const opening = this.#open().then((stream) => {
      stream.on('data', (res: ILeaseKeepAliveResponse) => this.#onData(res));
      stream.on('error', (err: unknown) => this.#onEnd(opening, err));
      stream.on('end', () =>
        this.#onEnd(opening, new MusterError('MUSTER_UNAVAILABLE', 'the etcd keep-alive stream ended')),
      );
      return stream;
    });
    opening.catch(() => {
      if (this.#stream === opening) this.#stream = undefined;
    });
    this.#stream = opening;
    return opening;
  }

  #onData(res: ILeaseKeepAliveResponse): void {
    const id = String(res.ID);
    const entry = this.#pending.get(id)?.[0];
    if (entry === undefined) return;
    const ttl = Number(res.TTL);
    if (ttl <= 0) {
      entry.reject(
        new MusterError(
          'MUSTER_LEASE_NOT_FOUND',
          `lease ${id} does not exist (expired, revoked or never granted)`,
          {
            details: { lease: id },
          },
        ),
      );
    } else {
      entry.resolve(ttl);
    }
  }

  #onEnd(stream: Promise<KeepAliveStream>, err: unknown): void {
    if (this.#stream !== stream) return;
    this.#stream = undefined;
    this.#rejectAll(err);
  }

  #rejectAll(err: unknown): void {
    const entries = [...this.#pending.entries()].flatMap(([id, list]) => list.map((e) => [id, e] as const));
    for (const [id, entry] of entries) entry.reject(fromEtcdError(err, { lease: id }));
  }

  #reset(): void {
    const stream = this.#stream;
    this.#stream = undefined;
    stream?.then(
      (s) => s.cancel(),
      () => undefined,
    );
    this.#rejectAll(
      new MusterError('MUSTER_UNAVAILABLE', 'the etcd keep-alive stream was reset after a timeout'),
    );
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#reset();
  }
}
