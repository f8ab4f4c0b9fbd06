import { ETCD_INSTALL_HINT, needBinary, startEtcd } from '../../src/testing/index.js';
import { agentProcessSuite } from './multiprocess-suite.js';

agentProcessSuite('a 3-member etcd', needBinary('etcd', ETCD_INSTALL_HINT), async () => {
  const etcd = await startEtcd({ members: 3 });
  return { url: etcd.url, endpoint: etcd.endpoints[0] as string, close: () => etcd.close() };
});
