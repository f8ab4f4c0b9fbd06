/**
 * The `muster` command line. Each capability contributes its subcommands from its own file in
 * `src/cli/`; this file assembles them and is the one place where errors become exit statuses.
 */
import { Command } from 'commander';
import { EXIT, packageVersion, reportError } from './report.js';
import { registerMembershipCommands } from './membership-commands.js';
import { registerServeCommand } from './serve-command.js';
import { registerPartitionsCommand } from './partitions-command.js';
import { registerConfigCommands } from './config-commands.js';
import { registerDemoCommand } from './demo-command.js';
import { registerStoreCommands } from './store-commands.js';
import { registerProxyCommands } from './proxy-commands.js';
import { registerAgentCommands } from './agent-commands.js';
import { registerBusCommands } from './bus-commands.js';
import { registerUiCommand } from './ui-command.js';

export { EXIT, packageVersion, reportError } from './report.js';

/** Builds the program; exported so tests can inspect help and parse without a process. */
export function buildProgram(): Command {
  const program = new Command('muster')
    .description(
      'A control plane for fleets of long-running processes: scheduled configuration, membership and ' +
        'health, partition ownership with fencing tokens, a supervising agent and a shard-routing proxy.',
    )
    .version(packageVersion(), '-V, --version', 'print the muster version')
    .showHelpAfterError('(run with --help for usage)')
    .configureHelp({ sortSubcommands: true })
    .addHelpText(
      'after',
      `
Stores are named by URL: memory:, etcd://host:2379[,host2:2379], etcds://… (TLS).
The default store is etcd://127.0.0.1:2379 — start one with \`muster serve\`.
Errors print their code (e.g. MUSTER_STALE_CONFIG) and exit with status 1; see docs/errors.md.`,
    );
  registerStoreCommands(program);
  registerMembershipCommands(program);
  registerServeCommand(program);
  registerPartitionsCommand(program);
  registerConfigCommands(program);
  registerDemoCommand(program);
  registerProxyCommands(program);
  registerAgentCommands(program);
  registerBusCommands(program);
  registerUiCommand(program);
  return program;
}

/** Runs the CLI with `argv` (without node and script); resolves to the exit status. */
export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  program.exitOverride();
  try {
    await program.parseAsync(argv, { from: 'user' });
    return typeof process.exitCode === 'number' ? process.exitCode : EXIT.ok;
  } catch (err) {
    return reportError(err, argv.includes('--json'));
  }
}
