#!/usr/bin/env node
// Runs the compiled test files (dist/test/**/*.test.js) with Node's built-in test runner.
// --test-force-exit: a file whose tests are done exits even if a socket left by a killed child keeps
// libuv busy (seen after the etcd churn test); a hang is never a pass.
// Usage: node scripts/test.mjs [--unit] [substring ...]
//   substrings: only files whose path contains one of them;
//   --unit: only the fast unit suites listed in UNIT (memory engine, manual clock, no server, no child
//   process, no socket; seconds in all) — `npm run test:unit`.
// Every test gets a timeout (MUSTER_TEST_TIMEOUT ms, default 300 s) unless it sets its own, so a hang
// fails instead of eating CI time. Node applies it to each test FILE as well (a file is one test of the
// runner), so it must exceed the longest file: server/crash-points takes about 70 s alone on a quiet
// machine and was cut at 120 s on a loaded one.
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';

const root = new URL('../dist/test/', import.meta.url).pathname;
function walk(dir) {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    return statSync(p).isDirectory() ? walk(p) : p.endsWith('.test.js') ? [p] : [];
  });
}

/**
 * The fast unit suites, by path under test/ (without .test.ts). A suite belongs here when it needs no
 * etcd, no `muster serve`, no child process and no socket, and finishes in seconds: the memory engine
 * and the ManualClock. Add a new file here when it fits; everything else is an integration suite.
 */
const UNIT = [
  'config/handle',
  'config/mirror-table',
  'config/publish',
  'config/relay-proofs',
  'config/relay-table',
  'foundation/clock-duration',
  'foundation/errors-doc',
  'foundation/lifecycle',
  'foundation/public-surface',
  'membership/cli',
  'membership/drain-key',
  'membership/membership',
  'membership/parser',
  'membership/session',
  'partitions/checker',
  'partitions/view',
  'placement/assign',
  'placement/golden',
  'placement/hash',
  'placement/incremental',
  'placement/preferences',
  'placement/tables',
  'store/etcd-breaker',
  'store/memory-conformance',
  'store/memory-engine',
  'store/watch-queue',
  'store/watched',
];

const args = process.argv.slice(2);
const unitOnly = args.includes('--unit');
const filters = args.filter((a) => a !== '--unit');
const unitFiles = new Set(UNIT.map((u) => join(root, `${u}.test.js`)));
const all = walk(root);
const missing = [...unitFiles].filter((f) => !all.includes(f));
if (unitOnly && missing.length > 0) {
  console.error(`scripts/test.mjs: UNIT names files that do not exist: ${missing.join(', ')}`);
  process.exit(1);
}
const files = all
  .filter((f) => !unitOnly || unitFiles.has(f))
  .filter((f) => filters.length === 0 || filters.some((s) => f.includes(s)))
  .sort();
if (files.length === 0) {
  console.error(`no test files matched ${filters.join(', ') || '(all)'} under ${root}`);
  process.exit(1);
}
const concurrency = process.env.MUSTER_TEST_CONCURRENCY ?? '2';
const timeout = process.env.MUSTER_TEST_TIMEOUT ?? '300000';
const r = spawnSync(
  process.execPath,
  ['--test', '--test-force-exit', `--test-concurrency=${concurrency}`, `--test-timeout=${timeout}`, ...files],
  {
    stdio: 'inherit',
  },
);
process.exit(r.status ?? 1);
