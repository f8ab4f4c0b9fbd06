/** `muster demo`: the whole system on the embedded default, in one command. */
import type { Command } from 'commander';
import { runConfigDemo, runSystemDemo, type SystemDemoResult } from '../demo/index.js';
import { startEtcd, startFaultProxy, startTempServe } from '../testing/index.js';
import { signalExitCode } from '../daemon/index.js';
import { invalidArgument, isMusterError, MusterError } from '../errors.js';
import { toMillis } from '../util/duration.js';
import { runUntilStopped } from './common.js';

export function registerDemoCommand(program: Command): void {
  program
    .command('demo')
    .description(
      'run the whole system on the embedded store (serve + dashboard, agents, proxy; docs/demo.md); --only config: the scheduled-configuration demo',
    )
    .option('--only <scenario>', 'run one scenario only: config')
    .option('--json', 'print the step results as JSON (whole-system demo)')
    .option('--agents <n>', 'agents in the whole-system demo', '3')
    .option('--partitions <n>', 'partitions in the whole-system demo', '8')
    .option('--workers <n>', 'worker processes', '10')
    .option('--lead <duration>', 'how far ahead the new version is scheduled', '5s')
    .option('--pause <duration>', 'how long the store is paused (default maxStaleness + 1.5s)')
    .option('--store <url>', 'use this single-endpoint store instead of starting one')
    .option(
      '--engine <engine>',
      'store to start: serve (embedded, default) or etcd (needs the etcd binary)',
      'serve',
    )
    .action(
      async (opts: {
        workers: string;
        lead: string;
        pause?: string;
        store?: string;
        engine: string;
        only?: string;
        json?: boolean;
        agents: string;
        partitions: string;
      }) => {
        if (opts.only !== undefined && opts.only !== 'config') {
          throw invalidArgument(`--only must be config, got '${opts.only}'`);
        }
        if (opts.only === undefined) {
          await systemDemo(opts);
          return;
        }
        if (opts.engine !== 'serve' && opts.engine !== 'etcd') {
          throw invalidArgument(`--engine must be serve or etcd, got '${opts.engine}'`);
        }
        const engine = opts.engine;
        let result: Awaited<ReturnType<typeof runConfigDemo>> | undefined;
        // On the daemon runtime's signal rules: Ctrl-C stops the workers and the store, then exits
        // 130; a second Ctrl-C forces the exit.
        await runUntilStopped('demo', async (signal) => {
          try {
            result = await runConfigDemo({
              launchers: {
                startEtcd: () => startEtcd(),
                startFaultProxy,
                startTempServe: () => startTempServe(),
              },
              workers: Number(opts.workers),
              leadMs: toMillis(opts.lead, '--lead'),
              ...(opts.pause === undefined ? {} : { pauseMs: toMillis(opts.pause, '--pause') }),
              ...(opts.store === undefined ? {} : { store: opts.store }),
              engine,
              signal,
            });
          } catch (err) {
            if (!(signal.aborted && isMusterError(err, 'MUSTER_ABORTED'))) throw err;
          }
        });
        if (result === undefined) {
          process.stdout.write('muster demo: interrupted; workers stopped, store closed\n');
          process.exitCode = signalExitCode('SIGINT');
          return;
        }
        if (result.wrongVersion > 0 || result.ranWhileUnverifiable > 0) {
          throw new MusterError(
            'MUSTER_INTERNAL',
            `the demo saw ${result.wrongVersion} wrong-version tasks and ${result.ranWhileUnverifiable} unverified tasks`,
          );
        }
      },
    );
}

async function systemDemo(opts: { json?: boolean; agents: string; partitions: string }): Promise<void> {
  const agents = Number(opts.agents);
  const partitions = Number(opts.partitions);
  if (!Number.isSafeInteger(agents) || agents < 2)
    throw invalidArgument(`--agents must be 2 or more, got '${opts.agents}'`);
  if (!Number.isSafeInteger(partitions) || partitions < 1) {
    throw invalidArgument(`--partitions must be a positive integer, got '${opts.partitions}'`);
  }
  let result: SystemDemoResult | undefined;
  const json = opts.json === true;
  // Ctrl-C: the demo's finally stops every process it started, then exits 130.
  await runUntilStopped('demo', async (signal) => {
    try {
      result = await runSystemDemo({
        agents,
        partitions,
        signal,
        log: (line) => {
          (json ? process.stderr : process.stdout).write(`${line}\n`);
        },
      });
    } catch (err) {
      if (!(signal.aborted && isMusterError(err, 'MUSTER_ABORTED'))) throw err;
    }
  });
  if (result === undefined) {
    process.stdout.write('muster demo: interrupted; every process stopped\n');
    process.exitCode = signalExitCode('SIGINT');
    return;
  }
  if (json) process.stdout.write(`${JSON.stringify(result)}\n`);
  if (!result.ok) {
    throw new MusterError(
      'MUSTER_INTERNAL',
      `the demo's steps did not all pass (${result.failedGets} failed GETs): ${result.steps
        .filter((s) => !s.ok)
        .map((s) => s.step)
        .join(', ')}`,
    );
  }
}
