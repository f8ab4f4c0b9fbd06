/**
 * `muster/testing`: helpers for tests of muster and of applications built on it.
 */
export { findBinary, needBinary, servicesRequired } from './services.js';
export {
  startEtcd,
  sweepOrphans,
  freePort,
  ETCD_INSTALL_HINT,
  TEST_PROGRESS_NOTIFY_INTERVAL,
  type StartEtcdOptions,
  type EtcdCluster,
  type EtcdMember,
} from './etcd-harness.js';
export {
  startFaultProxy,
  type FaultProxy,
  type FaultProxyOptions,
  type FaultMode,
  type Direction,
} from './fault-proxy.js';
export {
  historyNow,
  historyTimeOf,
  MemoryHistory,
  FileHistory,
  readHistory,
  type OwnershipEvent,
  type HistorySink,
} from './ownership-history.js';
export {
  checkOwnership,
  checkConvergence,
  describeViolations,
  type CheckResult,
  type ConvergenceOptions,
  type Ownership,
  type Violation,
  type ViolationKind,
} from './ownership-checker.js';
export { FaultyStore, type FaultyStoreOptions } from './faulty-store.js';
export {
  checkVersionHistory,
  type TaskRecord,
  type VersionViolation,
  type HistoryReport,
} from '../config/internal.js';
export { recordingWorker, type RecordingWorkerOptions } from './ownership-worker.js';
export { storeConformance, type ConformanceTarget, type ConformanceOptions } from './conformance.js';
export { collectUntil, waitFor, withTimeout } from './watch-helpers.js';
export { ManualClock } from '../clock.js';
export { makeTestCertificates, type TestCertificates } from './tls.js';
export { startTempServe, type TempServe } from './serve-harness.js';
export {
  startPostgres,
  sweepPostgresOrphans,
  needPostgres,
  findPostgresBinDir,
  POSTGRES_INSTALL_HINT,
  TEST_PG_USER,
  type PostgresServer,
  type StartPostgresOptions,
} from './postgres-harness.js';
export { checkRevisions, type RevisionViolation } from './revision-checker.js';
export { seededRandom } from './prng.js';
