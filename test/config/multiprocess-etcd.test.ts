import { ETCD_INSTALL_HINT, needBinary, startEtcd } from '../../src/testing/index.js';
import { configProcessSuite } from './multiprocess-suite.js';

configProcessSuite('etcd', needBinary('etcd', ETCD_INSTALL_HINT), async () => {
  const etcd = await startEtcd();
  return { url: etcd.url, endpoint: etcd.endpoints[0] as string, close: () => etcd.close() };
});
