/**
 * What is particular to the PostgreSQL engine: concurrent reapers, lost notifications, gap-free
 * revisions under concurrent writers (with the checker's negative test), concurrent migrations, the
 * version check, and the error boundary.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, fork } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { isMusterError } from '../../src/errors.js';
import { textOf } from '../../src/store/keys.js';
import {
  adminQuery,
  checkServerVersion,
  fromPgError,
  openPostgresStore,
  type PostgresStore,
  resolvePostgresOptions,
  SCHEMA_VERSION,
} from '../../src/store/postgres/index.js';
import {
  checkRevisions,
  collectUntil,
  needPostgres,
  type PostgresServer,
  startPostgres,
  waitFor,
} from '../../src/testing/index.js';

describe('postgres engine: pure parts', () => {
  test('an older server is refused with MUSTER_UNSUPPORTED_SERVER; 13 and later are accepted', () => {
    assert.throws(
      () => checkServerVersion(120015, '12.15'),
      (err) => isMusterError(err, 'MUSTER_UNSUPPORTED_SERVER') && /12\.15.*13 or later/.test(err.message),
    );
    assert.throws(
      () => checkServerVersion(Number.NaN),
      (err) => isMusterError(err, 'MUSTER_UNSUPPORTED_SERVER'),
    );
    checkServerVersion(130000);
    checkServerVersion(150004, '15.4');
  });

  test('URLs: schema and pool from the query, password redacted, bad schema refused', () => {
    const o = resolvePostgresOptions(
      'postgres://u:secret@db.example:5433/app?schema=fleet_a&poolMax=4&sslmode=require',
    );
    assert.equal(o.schema, 'fleet_a');
    assert.equal(o.poolMax, 4);
    assert.ok(!o.redactedUrl.includes('secret'));
    assert.ok(o.connectionString.includes('sslmode=require') && !o.connectionString.includes('schema='));
    assert.throws(
      () => resolvePostgresOptions('postgres://h/db?schema=Robert%27);DROP'),
      (err) => isMusterError(err, 'MUSTER_INVALID_ARGUMENT'),
    );
    assert.throws(
      () => resolvePostgresOptions('mysql://h/db'),
      (err) => isMusterError(err, 'MUSTER_UNSUPPORTED_URL'),
    );
    assert.throws(
      () => resolvePostgresOptions('postgres://h/db?poolMax=1'),
      (err) => isMusterError(err, 'MUSTER_INVALID_ARGUMENT'),
    );
  });

  test('pg errors are translated at one boundary', () => {
    const pgError = (code: string): Error => Object.assign(new Error(`boom ${code}`), { code });
    assert.equal(fromPgError(pgError('40P01')).code, 'MUSTER_UNAVAILABLE');
    assert.equal(fromPgError(pgError('40P01')).retryable, true);
    assert.equal(fromPgError(pgError('57P01')).code, 'MUSTER_UNAVAILABLE');
    assert.equal(fromPgError(pgError('08006')).code, 'MUSTER_UNAVAILABLE');
    assert.equal(fromPgError(pgError('57014')).code, 'MUSTER_TIMEOUT');
    assert.equal(fromPgError(pgError('28P01')).code, 'MUSTER_PERMISSION_DENIED');
    assert.equal(fromPgError(pgError('42501')).code, 'MUSTER_PERMISSION_DENIED');
    assert.equal(fromPgError(pgError('3D000')).code, 'MUSTER_INVALID_ARGUMENT');
    assert.equal(fromPgError(pgError('42P01')).code, 'MUSTER_INTERNAL');
    assert.equal(
      fromPgError(Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:1'), { code: 'ECONNREFUSED' }))
        .code,
      'MUSTER_UNAVAILABLE',
    );
    assert.equal(fromPgError(new Error('Connection terminated unexpectedly')).code, 'MUSTER_UNAVAILABLE');
    assert.equal(fromPgError(pgError('SELF_SIGNED_CERT_IN_CHAIN')).code, 'MUSTER_PERMISSION_DENIED');
    assert.equal(fromPgError(pgError('ERR_TLS_CERT_ALTNAME_INVALID')).code, 'MUSTER_PERMISSION_DENIED');
    assert.equal(
      fromPgError(new Error('The server does not support SSL connections')).code,
      'MUSTER_PERMISSION_DENIED',
    );
    assert.equal(fromPgError(pgError('40P01'), { key: 'k' }).details.key, 'k');
  });

  test('the revision checker catches gaps, duplicates and out-of-order delivery (negative test)', () => {
    assert.deepEqual(checkRevisions([11, 12, 13], 10, 13, [11, 12, 13]), []);
    assert.deepEqual(checkRevisions([11, 13], 10, 13), [{ kind: 'gap', revision: 12 }]);
    assert.deepEqual(
      checkRevisions([11, 12, 12], 10, 12).map((v) => v.kind),
      ['duplicate'],
    );
    assert.deepEqual(
      checkRevisions([11, 12, 13], 10, 13, [11, 13, 12]).map((v) => v.kind),
      ['watch-order'],
    );
    assert.deepEqual(
      checkRevisions([11, 12, 13], 10, 13, [11, 13]).map((v) => v.kind),
      ['watch-missed'],
    );
    assert.deepEqual(
      checkRevisions([9, 11], 10, 11).map((v) => v.kind),
      ['out-of-range'],
    );
  });
});

describe('postgres engine: on a real server', { skip: needPostgres() }, () => {
  let server: PostgresServer;
  const stores: PostgresStore[] = [];
  const open = async (
    url: string,
    options: Parameters<typeof openPostgresStore>[1] = {},
  ): Promise<PostgresStore> => {
    const s = await openPostgresStore(url, options);
    stores.push(s);
    return s;
  };
  before(async () => {
    server = await startPostgres();
  });
  after(async () => {
    await Promise.all(stores.map((s) => s.close()));
    await server?.close();
  });

  test(
    'migrations: five processes starting at once on an empty database apply each migration once',
    { timeout: 60_000 },
    async () => {
      const url = `${await server.createDatabase()}?schema=fresh`;
      const opened = await Promise.all(Array.from({ length: 5 }, () => open(url)));
      const rows = await adminQuery<{ version: number }>(
        url.replace('?schema=fresh', ''),
        'SELECT version FROM fresh.schema_migrations ORDER BY version',
      );
      assert.deepEqual(
        rows.map((r) => Number(r.version)),
        Array.from({ length: SCHEMA_VERSION }, (_, i) => i + 1),
      );
      const { revision } = await (opened[0] as PostgresStore).put('/k', 'v');
      assert.equal(textOf((await (opened[4] as PostgresStore).get('/k'))?.value ?? new Uint8Array()), 'v');
      assert.equal(revision, 2, 'a fresh store starts at revision 1, as etcd');
    },
  );

  test(
    'what the URL leaves out comes from the PG* environment variables, as psql reads them',
    { timeout: 60_000 },
    async () => {
      const url = new URL(await server.createDatabase());
      const saved = { PGHOST: process.env.PGHOST, PGPORT: process.env.PGPORT, PGUSER: process.env.PGUSER };
      Object.assign(process.env, { PGHOST: url.hostname, PGPORT: url.port, PGUSER: url.username });
      try {
        const store = await open(`postgres://${url.pathname}?schema=envonly`);
        assert.equal((await store.put('/env', 'ok')).revision, 2);
      } finally {
        for (const [k, v] of Object.entries(saved)) {
          if (v === undefined) delete process.env[k];
          else process.env[k] = v;
        }
      }
    },
  );

  test(
    'a schema migrated by a newer muster is refused with MUSTER_UNSUPPORTED_SERVER',
    { timeout: 60_000 },
    async () => {
      const db = await server.createDatabase();
      await (await open(`${db}?schema=newer`)).close();
      await adminQuery(
        db,
        `INSERT INTO newer.schema_migrations (version, description) VALUES (999, 'future')`,
      );
      await assert.rejects(openPostgresStore(`${db}?schema=newer`), (err) =>
        isMusterError(err, 'MUSTER_UNSUPPORTED_SERVER'),
      );
    },
  );

  test(
    'revisions stay gap-free and in commit order under concurrent writers from three clients',
    { timeout: 60_000 },
    async () => {
      const url = await server.createDatabase();
      const clients = [await open(url), await open(url), await open(url)];
      const c0 = clients[0] as PostgresStore;
      const from = await c0.headRevision();
      const watch = c0.watch('/g/', { fromRevision: from + 1 });
      const acked: number[] = [];
      const writer = async (store: PostgresStore, w: number): Promise<void> => {
        for (let i = 0; i < 25; i++) {
          const key = `/g/${(w * 7 + i) % 10}`;
          if (i % 5 === 4) {
            const t = await store.txn(
              [{ key, target: 'version', op: '>', value: 0 }],
              [{ type: 'put', key, value: `t${w}-${i}` }],
              [{ type: 'put', key, value: `f${w}-${i}` }],
            );
            acked.push(t.revision);
          } else {
            acked.push((await store.put(key, `${w}-${i}`)).revision);
          }
        }
      };
      await Promise.all(clients.flatMap((s, c) => [0, 1, 2, 3].map((w) => writer(s, c * 4 + w))));
      const to = await c0.headRevision();
      const { batches } = await collectUntil(
        watch,
        (_e, b) => b.type === 'events' && b.revision >= to,
        20_000,
      );
      watch.close();
      const watched = batches.flatMap((b) => (b.type === 'events' ? [b.revision] : []));
      assert.equal(acked.length, 300);
      assert.deepEqual(checkRevisions(acked, from, to, watched), []);
    },
  );

  /**
   * 20 leases (TTL 1 s), each with a key written by `a` and one by `b`; resolves after checking that
   * every key was deleted once, each lease's keys at one revision, one revision per lease (none
   * wasted by a losing reaper).
   */
  const reapedOnce = async (a: PostgresStore, b: PostgresStore): Promise<void> => {
    const leases = await Promise.all(Array.from({ length: 20 }, () => a.grantLease(1)));
    for (const [i, l] of leases.entries()) {
      await a.put(`/r/${i}/x`, 'x', { lease: l.id });
      await b.put(`/r/${i}/y`, 'y', { lease: l.id });
    }
    const from = await a.headRevision();
    const watch = b.watch('/r/', { fromRevision: from + 1 });
    const { events } = await collectUntil(watch, (evs) => evs.length >= 40, 15_000);
    watch.close();
    assert.ok(events.every((e) => e.type === 'delete'));
    const keys = events.map((e) => e.kv.key);
    assert.equal(new Set(keys).size, 40, 'every key deleted exactly once');
    for (let i = 0; i < 20; i++) {
      const revs = events.filter((e) => e.kv.key.startsWith(`/r/${i}/`)).map((e) => e.kv.modRevision);
      assert.equal(revs.length, 2);
      assert.equal(revs[0], revs[1], `lease ${i}: its keys went at one revision`);
    }
    await waitFor(async () => (await a.headRevision()) >= from + 20, { timeoutMs: 5000 });
    assert.equal(await a.headRevision(), from + 20, 'one revision per lease, none wasted by the loser');
    assert.equal((await a.range('/r/')).count, 0);
  };

  test(
    'two clients reaping the same expired leases delete each lease once, at one revision',
    { timeout: 60_000 },
    async () => {
      const url = await server.createDatabase();
      // Fast reapers, so both clients race for every lease.
      const a = await open(url, { reapInterval: 20 });
      const b = await open(url, { reapInterval: 20 });
      await reapedOnce(a, b);
      assert.equal(a.leasesReaped + b.leasesReaped, 20, 'each lease reaped by exactly one client');
    },
  );

  test(
    'two muster processes reaping the same expired leases delete each lease once, at one revision',
    { timeout: 60_000 },
    async () => {
      const url = await server.createDatabase();
      // This process writes and watches but does not reap (its first look is an hour away).
      const a = await open(url, { reapInterval: '1h' });
      const b = await open(url, { reapInterval: '1h' });
      const workers = [0, 1].map(() =>
        fork(new URL('./fixtures/pg-reaper.js', import.meta.url), [], {
          env: { ...process.env, MUSTER_STORE: url },
          stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
        }),
      );
      const message = (w: ChildProcess, t: string): Promise<{ t: string; reaped?: number }> =>
        new Promise((resolve, reject) => {
          const onMessage = (m: { t: string }): void => {
            if (m.t !== t) return;
            w.off('message', onMessage);
            resolve(m);
          };
          w.on('message', onMessage);
          w.once('exit', (code) => reject(new Error(`reaper process exited with ${code} before '${t}'`)));
        });
      try {
        // Both reapers run before the leases exist, so both race for each one.
        await Promise.all(workers.map((w) => message(w, 'ready')));
        await reapedOnce(a, b);
        const reports = await Promise.all(
          workers.map((w) => {
            const reported = message(w, 'reaped');
            w.send({ t: 'stop' });
            return reported;
          }),
        );
        const counts = reports.map((r) => r.reaped ?? 0);
        assert.equal(
          counts.reduce((x, y) => x + y, 0),
          20,
          `each lease reaped by exactly one process (${counts.join(' + ')})`,
        );
        assert.equal(a.leasesReaped + b.leasesReaped, 0);
      } finally {
        for (const w of workers) if (w.exitCode === null) w.kill('SIGKILL');
      }
    },
  );

  test(
    'a lost notification loses no event: the listening connection terminated mid-stream',
    { timeout: 60_000 },
    async () => {
      const url = await server.createDatabase();
      // No poll: only the re-connection's catch-up can deliver what was written while not listening.
      const watcher = await open(url, { watchPollInterval: '1h' });
      const writer = await open(url);
      // From an explicit revision: a watch "from now" is not ordered against another client's writes.
      const watch = watcher.watch('/n/', { fromRevision: (await watcher.headRevision()) + 1 });
      await writer.put('/n/0', '0');
      await collectUntil(watch, (evs) => evs.length >= 1);
      const pid = await watcher.listenerPid();
      await adminQuery(server.adminUrl, 'SELECT pg_terminate_backend($1)', [pid]);
      for (let i = 1; i <= 20; i++) await writer.put(`/n/${i}`, String(i));
      const { events } = await collectUntil(watch, (evs) => evs.some((e) => e.kv.key === '/n/20'), 10_000);
      watch.close();
      assert.deepEqual(
        events.map((e) => e.kv.key),
        Array.from({ length: 20 }, (_, i) => `/n/${i + 1}`),
        'every event once, in order',
      );
      assert.notEqual(await watcher.listenerPid(), pid, 'the notifier re-connected');
    },
  );

  test(
    'a lease renewal does not wait behind writes queued for the revision lock (every pooled connection busy)',
    { timeout: 60_000 },
    async () => {
      // The postgres churn found sessions expiring while every member acquired at once: renewals
      // queued for a pooled connection behind writes that waited for the revision lock.
      const url = await server.createDatabase();
      const store = await open(`${url}?poolMax=2`);
      const lease = await store.grantLease(30);
      const holder = new pg.Client({ connectionString: url });
      holder.on('error', () => undefined);
      await holder.connect();
      try {
        await holder.query('BEGIN');
        await holder.query('SELECT revision FROM muster.meta WHERE id = 1 FOR UPDATE');
        const settled: string[] = [];
        const puts = Array.from({ length: 4 }, (_, i) =>
          store.put(`/busy/${i}`, 'v').then(() => settled.push(`/busy/${i}`)),
        );
        // Both pooled connections wait for the lock; the other two puts wait for a connection.
        await waitFor(
          async () => {
            const rows = await adminQuery<{ n: string }>(
              url,
              `SELECT count(*) AS n FROM pg_stat_activity
             WHERE application_name = 'muster' AND wait_event_type = 'Lock'`,
            );
            return Number(rows[0]?.n) === 2;
          },
          {
            timeoutMs: 10_000,
            intervalMs: 50,
            what: 'both pooled connections waiting for the revision lock',
          },
        );
        assert.equal(await store.keepAlive(lease.id), 30);
        assert.deepEqual(settled, [], 'the renewal came back while every write still waited');
        await holder.query('COMMIT');
        await Promise.all(puts);
        assert.equal(settled.length, 4);
      } finally {
        await holder.end().catch(() => undefined);
      }
    },
  );

  test('a notification that never comes: the head poll delivers the event', { timeout: 60_000 }, async () => {
    const url = await server.createDatabase();
    const watcher = await open(url, { watchPollInterval: 100 });
    const watch = watcher.watch('/q/');
    await watcher.listenerPid();
    await watcher.put('/q/a', 'a');
    await collectUntil(watch, (evs) => evs.length >= 1);
    // A writer that commits a revision without pg_notify (as if the notification were dropped).
    await adminQuery(
      url,
      `WITH m AS (UPDATE muster.meta SET revision = revision + 1 WHERE id = 1 RETURNING revision),
       k AS (INSERT INTO muster.kv (key, value, create_revision, mod_revision, version, lease)
             SELECT convert_to('/q/silent', 'UTF8'), convert_to('s', 'UTF8'), revision, revision, 1, 0 FROM m)
       INSERT INTO muster.history (revision, seq, key, deleted, value, create_revision, version, lease)
       SELECT revision, 0, convert_to('/q/silent', 'UTF8'), false, convert_to('s', 'UTF8'), revision, 1, 0 FROM m`,
    );
    const { events } = await collectUntil(watch, (evs) => evs.length >= 1, 5000);
    watch.close();
    assert.equal(events[0]?.kv.key, '/q/silent');
  });

  test(
    'connections terminated under the pool: the next calls fail retryably at worst, then succeed',
    { timeout: 60_000 },
    async () => {
      const url = await server.createDatabase();
      const store = await open(url);
      await store.put('/c/a', '1');
      await adminQuery(
        server.adminUrl,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'muster' AND pid <> pg_backend_pid()",
      );
      let ok = false;
      for (let attempt = 0; attempt < 5 && !ok; attempt++) {
        try {
          await store.put('/c/a', '2');
          ok = true;
        } catch (err) {
          assert.ok(
            isMusterError(err) && err.retryable,
            `a dropped connection must fail retryably: ${String(err)}`,
          );
        }
      }
      assert.ok(ok);
      assert.equal(textOf((await store.get('/c/a'))?.value ?? new Uint8Array()), '2');
    },
  );

  test(
    'kill -9 of the server during writes and a watch: no acknowledged write lost, the watch resumes without gaps or duplicates',
    { timeout: 90_000 },
    async () => {
      const url = await server.createDatabase();
      const store = await open(url, { watchPollInterval: 200 });
      const from = await store.headRevision();
      const watch = store.watch('/k9/', { fromRevision: from + 1 });
      const acked: { revision: number; value: string }[] = [];
      let failures = 0;
      let stop = false;
      const writing = (async () => {
        for (let i = 0; !stop; i++) {
          try {
            const r = await store.put(`/k9/${i % 5}`, String(i));
            acked.push({ revision: r.revision, value: String(i) });
          } catch (err) {
            assert.ok(isMusterError(err) && err.retryable, String(err));
            failures++;
            await new Promise((r) => setTimeout(r, 20));
          }
        }
      })();
      await waitFor(() => acked.length >= 30, { timeoutMs: 20_000 });
      await server.kill();
      await waitFor(() => failures > 0, {
        timeoutMs: 10_000,
        what: 'writes failing while the server is down',
      });
      await server.restart();
      const count = acked.length;
      await waitFor(() => acked.length >= count + 30, {
        timeoutMs: 30_000,
        what: 'writes after the restart',
      });
      stop = true;
      await writing;
      const last = acked[acked.length - 1]?.revision as number;
      const { events } = await collectUntil(
        watch,
        (evs) => evs.some((e) => e.kv.modRevision >= last),
        20_000,
      );
      watch.close();
      const revs = events.map((e) => e.kv.modRevision);
      for (let i = 1; i < revs.length; i++)
        assert.ok((revs[i] as number) > (revs[i - 1] as number), 'no duplicate, no reorder');
      const byRev = new Map(events.map((e) => [e.kv.modRevision, textOf(e.kv.value)]));
      for (const a of acked)
        assert.equal(
          byRev.get(a.revision),
          a.value,
          `acknowledged write at ${a.revision} survived and was watched`,
        );
      // Revisions are contiguous: a write that failed at commit may have landed, but never leaves a hole.
      assert.deepEqual(
        revs,
        Array.from({ length: revs.length }, (_, i) => from + 1 + i),
      );
    },
  );
});
