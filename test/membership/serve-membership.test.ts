/** The membership suite (protocol-suite.ts) on `muster serve`. */
import { startTempServe } from '../../src/testing/index.js';
import { membershipProtocolSuite } from './protocol-suite.js';

membershipProtocolSuite({
  name: 'muster serve',
  skip: false,
  start: () => startTempServe(),
});
