/** The scheduled-configuration process suite (multiprocess-suite.ts) on PostgreSQL. */
import { needPostgres, startPostgres, TEST_PG_USER } from '../../src/testing/index.js';
import { configProcessSuite } from './multiprocess-suite.js';

configProcessSuite('postgres', needPostgres(), async () => {
  const server = await startPostgres();
  const url = await server.createDatabase();
  const db = new URL(url).pathname;
  return {
    url,
    endpoint: `127.0.0.1:${server.port}`,
    urlVia: (endpoint) => `postgres://${TEST_PG_USER}@${endpoint}${db}`,
    close: () => server.close(),
  };
});
