/** The Store contract on a real PostgreSQL (started by the harness), unchanged. */
import { describe } from 'node:test';
import { openStore } from '../../src/store/index.js';
import { needPostgres, startPostgres, storeConformance } from '../../src/testing/index.js';

describe('postgres engine', { skip: needPostgres() }, () => {
  storeConformance('postgres', async () => {
    const server = await startPostgres();
    const url = await server.createDatabase();
    return { store: await openStore(`${url}?schema=muster`), cleanup: () => server.close() };
  });
});
