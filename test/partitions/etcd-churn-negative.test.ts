/**
 * The churn suite's negative control, brief enough for every CI run: members that keep working past
 * their session deadline (IGNORE_DEADLINE) are SIGSTOPped past their TTL, so a successor takes their
 * partitions and, on SIGCONT, they record work before noticing the deadline — the ownership checker
 * must report the overlap. (A black hole is not enough: the local deadline timer still stops the work
 * in time — the safety margin doing its job.) If this found nothing, the churn test's "zero
 * violations" would prove nothing. About 10 s.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { describeViolations, ETCD_INSTALL_HINT, needBinary } from '../../src/testing/index.js';
import { runChurn } from './churn.js';

describe(
  'churn negative control on a 3-member etcd cluster',
  { skip: needBinary('etcd', ETCD_INSTALL_HINT) },
  () => {
    test('members that ignore their deadline are caught by the checker', { timeout: 90_000 }, async () => {
      const report = await runChurn({
        durationMs: 0, // the one fault below, once
        faults: ['SIGSTOP past TTL'],
        ignoreDeadline: true,
        partitions: 24,
        instances: 3,
        log: process.env.MUSTER_CHURN_LOG ? (l) => process.stderr.write(`# ${l}\n`) : undefined,
      });
      assert.deepEqual(report.actions, { 'SIGSTOP past TTL': 1 });
      assert.ok(
        report.result.violations.length > 0,
        `the checker saw no violation from members that ignore their deadline (${report.result.transitions} ownerships)`,
      );
      process.stderr.write(
        `# negative control: ${describeViolations(report.result.violations).split('\n')[0]}\n`,
      );
    });
  },
);
