/** The membership suite (protocol-suite.ts) on a real single-member etcd. */
import { ETCD_INSTALL_HINT, needBinary, startEtcd } from '../../src/testing/index.js';
import { membershipProtocolSuite } from './protocol-suite.js';

membershipProtocolSuite({
  name: 'etcd',
  skip: needBinary('etcd', ETCD_INSTALL_HINT),
  start: async () => {
    const etcd = await startEtcd();
    return { url: etcd.url, endpoint: etcd.endpoints[0] as string, close: () => etcd.close() };
  },
});
