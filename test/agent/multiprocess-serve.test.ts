import { startTempServe } from '../../src/testing/index.js';
import { agentProcessSuite } from './multiprocess-suite.js';

agentProcessSuite('muster serve', false, async () => {
  const serve = await startTempServe();
  return { url: serve.url, endpoint: serve.endpoint, close: () => serve.close() };
});
