/**
 * TLS and passwords, as a deployment uses them: a role that may log in only over TLS with a
 * password (scram-sha-256), the server's certificate verified against the URL's `sslrootcert`, and
 * the password from the URL or from `PGPASSWORD`. Each way in that must fail does, with a coded error.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { isMusterError } from '../../src/errors.js';
import { textOf } from '../../src/store/keys.js';
import { adminQuery, openPostgresStore } from '../../src/store/postgres/index.js';
import {
  makeTestCertificates,
  needPostgres,
  type PostgresServer,
  startPostgres,
  type TestCertificates,
} from '../../src/testing/index.js';

const ROLE = 'tls_user';
const PASSWORD = 's3cret-pw';

describe('postgres engine: TLS and passwords', { skip: needPostgres() }, () => {
  let server: PostgresServer;
  let certs: TestCertificates;
  let db: string;
  const url = (auth: string, query: string): string =>
    `postgres://${auth}@127.0.0.1:${server.port}/${db}?${query}`;
  const verified = (): string => `sslmode=verify-full&sslrootcert=${encodeURIComponent(certs.caFile)}`;

  before(async () => {
    certs = makeTestCertificates();
    server = await startPostgres();
    await server.configureTls({
      certFile: certs.serverCertFile,
      keyFile: certs.serverKeyFile,
      // The role may log in over TLS with its password, and not at all without TLS.
      hba: [`hostssl all ${ROLE} 127.0.0.1/32 scram-sha-256`, `host all ${ROLE} 127.0.0.1/32 reject`],
    });
    await adminQuery(server.adminUrl, `CREATE ROLE ${ROLE} LOGIN PASSWORD '${PASSWORD}'`);
    db = new URL(await server.createDatabase()).pathname.slice(1);
    await adminQuery(server.adminUrl, `ALTER DATABASE ${db} OWNER TO ${ROLE}`);
  });
  after(async () => {
    await server?.close();
  });

  test(
    'password in the URL, server certificate verified: the store works, every connection is TLS',
    {
      timeout: 60_000,
    },
    async () => {
      const store = await openPostgresStore(url(`${ROLE}:${PASSWORD}`, verified()));
      try {
        await store.put('/tls/k', 'v');
        assert.equal(textOf((await store.get('/tls/k'))?.value ?? new Uint8Array()), 'v');
        assert.ok(!store.url.includes(PASSWORD), `the password is redacted from store.url (${store.url})`);
        const rows = await adminQuery<{ n: string; tls: boolean }>(
          server.adminUrl,
          `SELECT count(*) AS n, bool_and(s.ssl) AS tls FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
         WHERE a.usename = $1`,
          [ROLE],
        );
        assert.ok(Number(rows[0]?.n) > 0 && rows[0]?.tls === true, JSON.stringify(rows));
      } finally {
        await store.close();
      }
    },
  );

  test('the password from PGPASSWORD when the URL has none', { timeout: 60_000 }, async () => {
    const saved = process.env.PGPASSWORD;
    process.env.PGPASSWORD = PASSWORD;
    try {
      const store = await openPostgresStore(url(ROLE, verified()));
      await store.put('/tls/env', 'v');
      await store.close();
    } finally {
      if (saved === undefined) delete process.env.PGPASSWORD;
      else process.env.PGPASSWORD = saved;
    }
  });

  test(
    'a wrong password, no TLS, or a server certificate from another CA: refused, coded, not retryable',
    {
      timeout: 60_000,
    },
    async () => {
      const other = makeTestCertificates();
      const refused: [string, string][] = [
        ['wrong password', url(`${ROLE}:wrong`, verified())],
        ['no TLS', url(`${ROLE}:${PASSWORD}`, 'sslmode=disable')],
        [
          'another CA',
          url(`${ROLE}:${PASSWORD}`, `sslmode=verify-full&sslrootcert=${encodeURIComponent(other.caFile)}`),
        ],
      ];
      for (const [what, u] of refused) {
        const err = await openPostgresStore(u).then(
          async (s) => (await s.close(), undefined),
          (e: unknown) => e,
        );
        assert.ok(
          isMusterError(err, 'MUSTER_PERMISSION_DENIED') && !err.retryable,
          `${what}: expected MUSTER_PERMISSION_DENIED, got ${String(err)}`,
        );
      }
    },
  );
});
