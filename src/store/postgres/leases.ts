/**
 * Lease expiry by the database clock, reaped by every client.
 *
 * A lease's `expires_at` is `now()` of the database at grant or renewal plus its TTL, and a lease is
 * expired when `expires_at <= now()` — one clock, the server's, whatever the clients' clocks say.
 * Every muster process runs a {@link LeaseReaper}: every `intervalMs` it lists a few expired leases
 * (a cheap index scan, no lock) and reaps each in its own writing transaction, which takes the
 * revision lock and then deletes the lease row only if it is still there and still expired
 * (`FOR UPDATE SKIP LOCKED`, so a lease being renewed right now is left for the next tick). Two
 * clients reaping the same lease therefore serialise on the revision lock; the second finds the row
 * gone and writes nothing: each lease's keys are deleted once, at one revision.
 */

export interface LeaseReaperOptions {
  readonly intervalMs: number;
  /** Ids of leases expired by the database clock (no locks taken). */
  findExpired(): Promise<string[]>;
  /** Deletes one lease and its keys if it is still expired; false when another client did. */
  reap(id: string): Promise<boolean>;
}

/** The periodic reaping loop of one client. Failures are retried at the next tick. */
export class LeaseReaper {
  readonly #opts: LeaseReaperOptions;
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<void> | undefined;
  #stopped = false;
  /** Leases this client reaped (for tests and metrics). */
  reaped = 0;

  constructor(options: LeaseReaperOptions) {
    this.#opts = options;
  }

  start(): void {
    if (this.#stopped || this.#timer !== undefined) return;
    this.#timer = setInterval(() => {
      this.#running ??= this.#tick().finally(() => (this.#running = undefined));
    }, this.#opts.intervalMs);
    this.#timer.unref();
  }

  stop(): void {
    this.#stopped = true;
    clearInterval(this.#timer);
  }

  /** Resolves when no tick is running. */
  async idle(): Promise<void> {
    await this.#running;
  }

  async #tick(): Promise<void> {
    try {
      const ids = await this.#opts.findExpired();
      for (const id of ids) {
        if (this.#stopped) return;
        if (await this.#opts.reap(id)) this.reaped++;
      }
    } catch {
      // the database is away or we are closing: the next tick tries again
    }
  }
}
