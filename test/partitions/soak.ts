/**
 * `npm run soak`: the churn test for longer (default 10 minutes; MUSTER_SOAK_MS to change), printing
 * each action and the checker's verdict. Exits non-zero on any violation.
 */
import { describeViolations } from '../../src/testing/index.js';
import { runChurn } from './churn.js';

const durationMs = Number(process.env.MUSTER_SOAK_MS ?? 600_000);
const report = await runChurn({
  durationMs,
  seed: Number(process.env.MUSTER_SOAK_SEED ?? Date.now() % 100_000),
  log: (l) => process.stdout.write(`${l}\n`),
  ignoreDeadline: process.env.MUSTER_SOAK_IGNORE_DEADLINE === '1',
});
process.stdout.write(
  `ownerships ${report.result.transitions}, actions ${JSON.stringify(report.actions)}, converged in ${report.convergeMs} ms, violations ${report.violations.length}\n`,
);
if (report.violations.length > 0) {
  process.stdout.write(`${describeViolations(report.violations, 50)}\n`);
  process.exitCode = 1;
}
