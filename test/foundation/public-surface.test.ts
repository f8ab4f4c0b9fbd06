/**
 * The package's public surface, as a list: the root export (`muster`) changes only on purpose. When this
 * fails, decide whether the name belongs to what applications call (then add it here and to the docs)
 * or to the machinery capabilities share (then export it from that capability's index.ts/internal.ts,
 * not from src/index.ts). Test tools belong in `muster/testing`.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import ts from 'typescript';
import * as root from '../../src/index.js';
import * as testing from '../../src/testing/index.js';

const repo = new URL('../../../', import.meta.url).pathname;

/** Runtime values of `muster`. */
const VALUES = [
  'Balancer',
  'Bus',
  'Check',
  'ConfigHandle',
  'ConfigRelay',
  'ConfigSnapshot',
  'DEFAULT_CALL_TIMEOUT_MS',
  'DEFAULT_CHECK_INTERVAL_MS',
  'DEFAULT_CHECK_TIMEOUT_MS',
  'DEFAULT_CLOCK_RATE_ERROR_PPM',
  'DEFAULT_CONNECT_TIMEOUT_MS',
  'DEFAULT_DEDUP_MAX_IDS',
  'DEFAULT_DEDUP_WINDOW_MS',
  'DEFAULT_DOWN_BACKOFF_MS',
  'DEFAULT_EPSILON',
  'DEFAULT_HEARTBEAT_INTERVAL_MS',
  'DEFAULT_HEARTBEAT_TIMEOUT_MS',
  'DEFAULT_HELLO_TIMEOUT_MS',
  'DEFAULT_INITIAL_STATUS',
  'DEFAULT_KEEP_VERSIONS',
  'DEFAULT_LEAD_SLACK_MS',
  'DEFAULT_MAX_CLOCK_SKEW_MS',
  'DEFAULT_MAX_CONCURRENT_ACQUIRES',
  'DEFAULT_MAX_CONCURRENT_MOVES',
  'DEFAULT_MAX_FRAME_BYTES',
  'DEFAULT_MAX_HELD_CALLS',
  'DEFAULT_MAX_IN_FLIGHT',
  'DEFAULT_MAX_QUEUE_BYTES',
  'DEFAULT_MAX_STALENESS_MS',
  'DEFAULT_MIN_SAFETY_MARGIN_MS',
  'DEFAULT_PARTITION_TTL_MS',
  'DEFAULT_POLICY',
  'DEFAULT_RETRY_DELAY_MS',
  'DEFAULT_ROOT',
  'DEFAULT_ROOT_PREFIX',
  'DEFAULT_SEED',
  'DEFAULT_SERVE_GRACE_MS',
  'DEFAULT_SESSION_TTL_MS',
  'DEFAULT_STOP_TIMEOUT_MS',
  'DEFAULT_STORE_URL',
  'DEFAULT_VERIFY_ROUNDS',
  'DEFAULT_WEIGHT',
  'ERROR_CODES',
  'HealthChecks',
  'InstanceView',
  'MAX_KEY_BYTES',
  'MAX_KEY_PARTITIONS',
  'MAX_LEASE_TTL_SECONDS',
  'MAX_PARTITIONS',
  'MAX_TXN_OPS',
  'MAX_VALUE_BYTES',
  'MIN_SESSION_TTL_MS',
  'Member',
  'MusterError',
  'NO_LEASE',
  'PartitionedHandle',
  'RelayClient',
  'ServiceViewHandle',
  'Session',
  'SystemClock',
  'Timeline',
  'assign',
  'bytesOf',
  'cancelConfig',
  'deleteRoute',
  'diffAssignments',
  'diffValues',
  'httpStatusOf',
  'initConfig',
  'isHealthy',
  'isMusterError',
  'isRetryable',
  'join',
  'joinPartitioned',
  'jsonBytes',
  'jsonOf',
  'listenAndJoin',
  'openBus',
  'openConfig',
  'openMemoryStore',
  'openServiceView',
  'openSession',
  'openStore',
  'partitionForKey',
  'partitionIds',
  'publishConfig',
  'publishSpec',
  'putRoute',
  'readBusTlsFiles',
  'readConfig',
  'readPartitionStatus',
  'resolvePolicy',
  'serviceKeys',
  'servicesPrefix',
  'startServer',
  'statusPrefix',
  'systemClock',
  'textOf',
  'timelineOf',
  'toMillis',
  'validateValue',
  'watchInstances',
];

/** Type-only names of `muster`. */
const TYPES = [
  'AcquireContext',
  'AcquireHandler',
  'AssignmentDiff',
  'AssumedPartition',
  'BalanceStrategy',
  'BalancerOptions',
  'BusEvents',
  'BusLogger',
  'BusOptions',
  'BusTlsFiles',
  'BusTlsOptions',
  'BusPublishOptions',
  'CallOptions',
  'Caller',
  'CheckAction',
  'CheckHandler',
  'CheckOptions',
  'CheckOptionsBase',
  'CheckTransition',
  'Clock',
  'Compare',
  'CompareOp',
  'CompareTarget',
  'ConfigAccessOptions',
  'ConfigFreshness',
  'ConfigHandleEvents',
  'ConfigHandleState',
  'ConfigPolicy',
  'ConfigPolicyOptions',
  'ConfigRelayOptions',
  'ConfigSource',
  'ConfigState',
  'ConfigSwitch',
  'ConfigVersion',
  'DeleteOptions',
  'DeleteResult',
  'Delivery',
  'DropEvent',
  'Duration',
  'ErrorCode',
  'ErrorDetails',
  'EtcdStoreOptions',
  'Handler',
  'HandlerContext',
  'HealthChecksEvents',
  'HealthChecksOptions',
  'HealthStatus',
  'HttpCheckOptions',
  'IgnoredPin',
  'IgnoredPinReason',
  'Instance',
  'InstanceChange',
  'InstanceRecord',
  'InstanceState',
  'InstanceViewEvents',
  'InstancesUpdate',
  'JoinOptions',
  'JoinPartitionedOptions',
  'KeySelector',
  'KeyValue',
  'LeaseGrant',
  'LeaseId',
  'LeaseInfo',
  'ListenAndJoinOptions',
  'MemberEvents',
  'MemberState',
  'MemoryStore',
  'MemoryStoreOptions',
  'MusterErrorOptions',
  'MusterServer',
  'OpenConfigOptions',
  'OpenServiceViewOptions',
  'OpenStoreOptions',
  'Owner',
  'OwnerFields',
  'OwnerRecord',
  'PartitionDestination',
  'PartitionMap',
  'PartitionSettings',
  'PartitionStatus',
  'PartitionStatusRow',
  'PartitionedEvents',
  'PartitionedState',
  'PartitionsLogger',
  'PinRecord',
  'PlacementInput',
  'PlacementInstance',
  'PlacementResult',
  'PlacementSettings',
  'PlacementStats',
  'PublishOptions',
  'PublishResult',
  'PutOptions',
  'PutResult',
  'RangeOptions',
  'RangeResult',
  'ReadOptions',
  'RelayClientOptions',
  'RelayStats',
  'ReleaseHandler',
  'RouteRecord',
  'ScriptCheckOptions',
  'ServeOptions',
  'ServerOptions',
  'ServiceKeys',
  'ServiceSpec',
  'Serving',
  'SessionEvents',
  'SessionOptions',
  'SessionState',
  'StatsdOptions',
  'StopCause',
  'Store',
  'SubscribeOptions',
  'SubscriptionHandler',
  'TimerHandle',
  'TtlCheckOptions',
  'TxnOp',
  'TxnOpResult',
  'TxnResult',
  'UnhealthyPolicy',
  'ValueChange',
  'ValueInput',
  'ViewAssignment',
  'ViewInstance',
  'Watch',
  'WatchBatch',
  'WatchEvent',
  'WatchInstancesOptions',
  'WatchOptions',
];

/** Every name (value or type) a module exports, by the compiler's reading of its source. */
function exportedNames(file: string): { values: string[]; types: string[] } {
  const program = ts.createProgram([file], {
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    target: ts.ScriptTarget.ES2022,
    strict: true,
    skipLibCheck: true,
    noEmit: true,
    types: ['node'],
  });
  const checker = program.getTypeChecker();
  const source = program.getSourceFile(file);
  assert.ok(source, file);
  const moduleSymbol = checker.getSymbolAtLocation(source);
  assert.ok(moduleSymbol, file);
  const values: string[] = [];
  const types: string[] = [];
  for (const s of checker.getExportsOfModule(moduleSymbol)) {
    const target = s.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(s) : s;
    // `export { type C }` of a class exports only its type, though the class itself is a value.
    const typeOnly = (s.declarations ?? []).some(
      (d) => ts.isExportSpecifier(d) && (d.isTypeOnly || d.parent.parent.isTypeOnly),
    );
    (target.flags & ts.SymbolFlags.Value && !typeOnly ? values : types).push(s.name);
  }
  return { values: values.sort(), types: types.sort() };
}

describe('public surface', { timeout: 60_000 }, () => {
  test('the root export holds exactly the listed runtime values', () => {
    assert.deepEqual(Object.keys(root).sort(), [...VALUES].sort());
  });

  test('the root export holds exactly the listed names, types included', () => {
    const names = exportedNames(join(repo, 'src/index.ts'));
    assert.deepEqual(names.values, [...VALUES].sort());
    assert.deepEqual(names.types, [...TYPES].sort());
  });

  test('test tools are in muster/testing, not in the root', () => {
    for (const name of ['checkVersionHistory', 'checkOwnership', 'FaultyStore', 'ManualClock', 'startEtcd']) {
      assert.ok(name in testing, `muster/testing exports ${name}`);
      assert.ok(!(name in root), `muster does not export ${name}`);
    }
    for (const name of ['registerEngine', 'throwIfAborted', 'PrefixMirror', 'watchPrefix', 'abortedError']) {
      assert.ok(!(name in root), `muster does not export ${name}`);
    }
  });
});
