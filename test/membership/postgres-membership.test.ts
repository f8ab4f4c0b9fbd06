/** The membership suite (protocol-suite.ts) on PostgreSQL: the same guarantees on the postgres engine. */
import { needPostgres, startPostgres, TEST_PG_USER } from '../../src/testing/index.js';
import { membershipProtocolSuite } from './protocol-suite.js';

membershipProtocolSuite({
  name: 'postgres',
  skip: needPostgres(),
  start: async () => {
    const server = await startPostgres();
    const url = await server.createDatabase();
    const db = new URL(url).pathname;
    return {
      url,
      endpoint: `127.0.0.1:${server.port}`,
      urlVia: (endpoint) => `postgres://${TEST_PG_USER}@${endpoint}${db}`,
      close: () => server.close(),
    };
  },
});
