/**
 * An aborted call stops on the server: a write blocked on the revision lock is aborted, its backend
 * is ended (gone from `pg_stat_activity`), and when the lock frees it writes nothing — while a
 * control write blocked beside it, without a signal, does commit (so "nothing written" is the
 * abort's doing, not the lock's).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { isMusterError } from '../../src/errors.js';
import { textOf } from '../../src/store/keys.js';
import { adminQuery, openPostgresStore, type PostgresStore } from '../../src/store/postgres/index.js';
import { needPostgres, type PostgresServer, startPostgres, waitFor } from '../../src/testing/index.js';

/** The lock holder's statement: it holds the revision row for at most this long (it is ended sooner). */
const HOLD_SQL = 'SELECT 1 FROM muster.meta WHERE id = 1 FOR UPDATE; SELECT pg_sleep(60)';

type Activity = {
  pid: number;
  query: string;
  wait_event_type: string | null;
  wait_event: string | null;
};

describe('postgres engine: aborted calls are cancelled on the server', { skip: needPostgres() }, () => {
  let server: PostgresServer;
  const stores: PostgresStore[] = [];
  before(async () => {
    server = await startPostgres();
  });
  after(async () => {
    await Promise.all(stores.map((s) => s.close()));
    await server?.close();
  });

  const activity = (url: string): Promise<Activity[]> =>
    adminQuery<Activity>(
      url,
      `SELECT pid, query, wait_event_type, wait_event FROM pg_stat_activity
       WHERE datname = current_database() AND pid <> pg_backend_pid()`,
    );

  const writes: Record<string, (s: PostgresStore, value: string, signal?: AbortSignal) => Promise<unknown>> =
    {
      'put (one statement)': (s, value, signal) =>
        s.put('/cancel/k', value, signal === undefined ? {} : { signal }),
      'txn (a transaction of several statements)': (s, value, signal) =>
        s.txn(
          [{ key: '/cancel/k', target: 'version', op: '>', value: 0 }],
          [{ type: 'put', key: '/cancel/k', value }],
          [],
          signal === undefined ? {} : { signal },
        ),
    };

  for (const [what, write] of Object.entries(writes)) {
    test(
      `${what} blocked on the revision lock, then aborted: its backend ends and it writes nothing`,
      {
        timeout: 60_000,
      },
      async () => {
        const url = await server.createDatabase();
        const store = await openPostgresStore(url);
        stores.push(store);
        const { revision: head0 } = await store.put('/cancel/k', 'before');

        const holding = adminQuery(url, HOLD_SQL).catch(() => undefined);
        await waitFor(async () => (await activity(url)).some((a) => a.wait_event === 'PgSleep'), {
          what: 'the lock holder to sleep',
        });

        const ac = new AbortController();
        const aborted = write(store, 'aborted', ac.signal);
        aborted.catch(() => undefined);
        let blocked: Activity | undefined;
        await waitFor(
          async () => {
            blocked = (await activity(url)).find((a) => a.wait_event_type === 'Lock');
            return blocked !== undefined;
          },
          { what: 'the write to wait for the revision lock' },
        );
        // The control: the same write without a signal, queued behind it on the lock.
        const control = write(store, 'control');
        await waitFor(
          async () => (await activity(url)).filter((a) => a.wait_event_type === 'Lock').length === 2,
          {
            what: 'the control write to wait too',
          },
        );

        ac.abort(new Error('the caller gave up'));
        await assert.rejects(aborted, (err) => isMusterError(err, 'MUSTER_ABORTED'));
        const pid = (blocked as Activity).pid;
        await waitFor(async () => !(await activity(url)).some((a) => a.pid === pid), {
          what: `the aborted write's backend ${pid} to end`,
        });

        // Free the lock: the control commits; the aborted write, gone, cannot.
        await adminQuery(
          url,
          "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE wait_event = 'PgSleep' AND datname = current_database()",
        );
        await holding;
        await control;
        assert.equal(textOf((await store.get('/cancel/k'))?.value ?? new Uint8Array()), 'control');
        assert.equal(await store.headRevision(), head0 + 1, 'only the control write took a revision');
        // The pool is not poisoned: the next calls, with and without a signal, work.
        await store.put('/cancel/k', 'later', { signal: new AbortController().signal });
        assert.equal(textOf((await store.get('/cancel/k'))?.value ?? new Uint8Array()), 'later');
      },
    );
  }

  test(
    'a call aborted while it waits for a pooled connection never sends its statement',
    { timeout: 60_000 },
    async () => {
      const url = await server.createDatabase();
      const store = await openPostgresStore(url, { poolMax: 2 });
      stores.push(store);
      const { revision: head0 } = await store.put('/cancel/pool', 'before');
      const holding = adminQuery(url, HOLD_SQL).catch(() => undefined);
      await waitFor(async () => (await activity(url)).some((a) => a.wait_event === 'PgSleep'), {
        what: 'the lock holder to sleep',
      });
      // Both of the pool's connections wait for the lock; the next call waits for a connection.
      const first = [store.put('/cancel/pool', 'first'), store.put('/cancel/pool', 'first')];
      await waitFor(
        async () => (await activity(url)).filter((a) => a.wait_event_type === 'Lock').length === 2,
        { what: 'the first writes to wait for the revision lock' },
      );
      const ac = new AbortController();
      const queued = store.put('/cancel/pool', 'queued', { signal: ac.signal });
      ac.abort();
      await assert.rejects(queued, (err) => isMusterError(err, 'MUSTER_ABORTED'));
      await adminQuery(
        url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE wait_event = 'PgSleep' AND datname = current_database()",
      );
      await holding;
      await Promise.all(first);
      // The connection the aborted call was waiting for went back to the pool unused.
      await store.put('/cancel/pool', 'after');
      assert.equal(
        await store.headRevision(),
        head0 + 3,
        'the first two and the last write; never the aborted one',
      );
      const history = await store.get('/cancel/pool', { revision: head0 + 2 });
      assert.equal(textOf(history?.value ?? new Uint8Array()), 'first');
    },
  );

  test('a call whose signal already fired sends nothing', { timeout: 30_000 }, async () => {
    const url = await server.createDatabase();
    const store = await openPostgresStore(url);
    stores.push(store);
    const head = await store.headRevision();
    const signal = AbortSignal.abort();
    await assert.rejects(store.put('/cancel/early', 'x', { signal }), (err) =>
      isMusterError(err, 'MUSTER_ABORTED'),
    );
    await assert.rejects(store.get('/cancel/early', { signal }), (err) =>
      isMusterError(err, 'MUSTER_ABORTED'),
    );
    assert.equal(await store.headRevision(), head);
  });
});
