import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { describeViolations, ETCD_INSTALL_HINT, needBinary } from '../../src/testing/index.js';
import { runChurn } from './churn.js';

describe(
  'partition ownership under churn on a 3-member etcd cluster',
  { skip: needBinary('etcd', ETCD_INSTALL_HINT) },
  () => {
    test(
      'kill -9, SIGSTOP zombies, black holes, leaves, drains and a killed leader: zero violations',
      { timeout: 120_000 },
      async () => {
        const report = await runChurn({
          durationMs: Number(process.env.MUSTER_CHURN_MS ?? 45_000),
          log: process.env.MUSTER_CHURN_LOG ? (l) => process.stderr.write(`# ${l}\n`) : undefined,
        });
        process.stderr.write(
          `# churn: ${report.result.transitions} ownerships, actions ${JSON.stringify(report.actions)}, converged in ${report.convergeMs} ms\n`,
        );
        assert.deepEqual(report.unexpectedExits, [], 'a member exited without being killed or told to leave');
        // The count and a bounded message (describeViolations, report.trail): a ~100 KB failure message made
        // Node 20's test runner spin for minutes after the file ended.
        assert.equal(
          report.violations.length,
          0,
          `${describeViolations(report.violations)}\n${report.trail}`,
        );
        assert.ok(
          report.result.transitions >= 1000,
          `only ${report.result.transitions} ownership transitions`,
        );
      },
    );
  },
);
