/** The PostgreSQL test harness: finding the binaries, MUSTER_REQUIRE_SERVICES, and a server's life. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { isMusterError } from '../../src/errors.js';
import { adminQuery } from '../../src/store/postgres/index.js';
import { findPostgresBinDir, needPostgres, startPostgres } from '../../src/testing/index.js';

describe('postgres harness: finding PostgreSQL', () => {
  const nowhere = { PATH: '/nonexistent' };
  test('missing binaries: a skip message, or MUSTER_MISSING_BINARY when services are required', () => {
    assert.equal(findPostgresBinDir(nowhere, '/nonexistent'), undefined);
    const skip = needPostgres(nowhere, '/nonexistent');
    assert.ok(typeof skip === 'string' && skip.includes('apt-get install postgresql'));
    assert.throws(
      () => needPostgres({ ...nowhere, MUSTER_REQUIRE_SERVICES: '1' }, '/nonexistent'),
      (err) => isMusterError(err, 'MUSTER_MISSING_BINARY'),
    );
  });
});

describe('postgres harness: a server', { skip: needPostgres() }, () => {
  test(
    'starts, keeps its data across kill -9 and restart, and close() removes everything',
    { timeout: 60_000 },
    async () => {
      const server = await startPostgres();
      try {
        const url = await server.createDatabase();
        await adminQuery(url, 'CREATE TABLE t (v int)');
        await adminQuery(url, 'INSERT INTO t VALUES (42)');
        await server.kill();
        assert.equal(server.running, false);
        await assert.rejects(adminQuery(url, 'SELECT 1'), (err) => isMusterError(err, 'MUSTER_UNAVAILABLE'));
        await server.restart();
        assert.deepEqual(await adminQuery(url, 'SELECT v FROM t'), [{ v: 42 }]);
        await server.stop();
        assert.equal(server.running, false);
      } finally {
        await server.close();
      }
      await assert.rejects(adminQuery(server.adminUrl, 'SELECT 1'));
    },
  );
});
