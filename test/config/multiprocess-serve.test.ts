import { startTempServe } from '../../src/testing/index.js';
import { configProcessSuite } from './multiprocess-suite.js';

configProcessSuite('muster serve', false, () => startTempServe());
