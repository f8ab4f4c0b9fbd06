/**
 * Cancelling a call's statements on the server when its AbortSignal fires.
 *
 * A call without a signal runs on the pool ({@link poolDb}). A call with one runs in a
 * {@link CancelScope}: it checks its connections out itself, so that when the signal fires it knows
 * which backends run its statements. Then, while the caller already has `MUSTER_ABORTED`:
 * - each connection the call holds is ended on the server with `pg_terminate_backend(pid)`, sent on a
 *   fresh connection (the pool may be full of calls queued on the very lock the aborted one waits
 *   for). Terminating rather than `pg_cancel_backend` also covers a call caught *between* two
 *   statements of a transaction, where a cancel would hit nothing and the next statement would run:
 *   the session ends, its transaction rolls back, and every later statement fails;
 * - those connections are destroyed when the call lets go of them, never returned to the pool, so a
 *   termination that lands late can never hit another call's statement;
 * - a connection the call was still waiting for is handed back unused.
 */
import pg from 'pg';
import { abortedError } from '../../errors.js';
import { onAbort } from '../../util/abort.js';

/** Where one call runs its statements: the pool, or a {@link CancelScope}. */
export interface Db {
  readonly query: pg.PoolClient['query'];
  connect(): Promise<pg.PoolClient>;
  /** Lets go of a connection from {@link connect}; `broken` (or an abort) destroys it. */
  release(client: pg.PoolClient, broken?: Error): void;
}

/** The pool itself: what a call without a signal uses. */
export function poolDb(pool: pg.Pool): Db {
  // Pool and PoolClient declare the same query() overloads; TypeScript cannot see it through bind().
  const query = ((...args: unknown[]) =>
    (pool.query as (...a: unknown[]) => unknown).apply(pool, args)) as pg.PoolClient['query'];
  return {
    query,
    connect: () => pool.connect(),
    release: (client, broken) => client.release(broken),
  };
}

/** The backend pid node-postgres received at connect (`BackendKeyData`); not in its type declarations. */
function backendPid(client: pg.PoolClient): number | undefined {
  const pid = (client as unknown as { processID?: unknown }).processID;
  return typeof pid === 'number' && pid > 0 ? pid : undefined;
}

const ignore = (): void => undefined;

/** One call with a signal (see the module comment). Call {@link end} when the call has settled. */
export class CancelScope implements Db {
  readonly query: pg.PoolClient['query'];
  readonly #pool: pg.Pool;
  readonly #signal: AbortSignal;
  readonly #terminate: (pid: number) => void;
  readonly #held = new Set<pg.PoolClient>();
  readonly #off: () => void;
  #aborted = false;

  /** `terminate(pid)` ends a backend from another connection (the store tracks it until close). */
  constructor(pool: pg.Pool, signal: AbortSignal, terminate: (pid: number) => void) {
    this.#pool = pool;
    this.#signal = signal;
    this.#terminate = terminate;
    this.#off = onAbort(signal, () => this.#abort());
    this.query = ((...args: Parameters<pg.PoolClient['query']>) =>
      this.#query(args)) as pg.PoolClient['query'];
  }

  async connect(): Promise<pg.PoolClient> {
    const client = await this.#pool.connect();
    if (this.#aborted) {
      client.release();
      throw abortedError(this.#signal);
    }
    this.#held.add(client);
    return client;
  }

  release(client: pg.PoolClient, broken?: Error): void {
    this.#held.delete(client);
    client.release(this.#aborted ? (broken ?? true) : broken);
  }

  /** Stops listening to the signal. */
  end(): void {
    this.#off();
  }

  async #query(args: Parameters<pg.PoolClient['query']>): Promise<unknown> {
    const client = await this.connect();
    // A terminated session reports its end as an 'error' on the client too.
    client.on('error', ignore);
    let broken: Error | undefined;
    try {
      return await (client.query as (...a: unknown[]) => Promise<unknown>)(...args);
    } catch (err) {
      broken = err instanceof Error ? err : new Error(String(err));
      throw err;
    } finally {
      client.off('error', ignore);
      this.release(client, broken);
    }
  }

  #abort(): void {
    this.#aborted = true;
    for (const client of this.#held) {
      const pid = backendPid(client);
      if (pid !== undefined) this.#terminate(pid);
    }
  }
}

/**
 * Ends backend `pid` with `pg_terminate_backend` on a connection of its own, made with `config`.
 * Never rejects: a backend that is already gone, or a server that cannot be reached, leaves nothing
 * to stop (the destroyed connection ends the session once the server reads from it).
 */
export async function terminateBackend(config: pg.ClientConfig, pid: number): Promise<void> {
  const client = new pg.Client({ ...config, application_name: 'muster-cancel' });
  client.on('error', ignore);
  try {
    await client.connect();
    await client.query('SELECT pg_terminate_backend($1)', [pid]);
  } catch {
    // see above
  } finally {
    await client.end().catch(ignore);
  }
}
