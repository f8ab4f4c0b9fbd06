/**
 * `muster agent …` without the rest of the command line: `bin/muster.js` takes this entry when the
 * first argument is `agent`, so the agent daemon on every host loads the agent's modules only — not
 * the embedded server, the proxy, the bus, the demo or the dashboard (about 13 MB of RSS that an
 * agent never uses; docs/agent.md, "Memory").
 */
import { Command } from 'commander';
import { applyAgentHeapDefaults } from '../agent/index.js';
import { registerAgentCommands } from './agent-commands.js';
import { EXIT, packageVersion, reportError } from './report.js';

/** Runs `muster agent …` with `argv` (without node and script); resolves to the exit status. */
export async function main(argv: string[]): Promise<number> {
  applyAgentHeapDefaults();
  const program = new Command('muster')
    .version(packageVersion(), '-V, --version', 'print the muster version')
    .showHelpAfterError('(run with --help for usage)');
  registerAgentCommands(program);
  program.exitOverride();
  try {
    await program.parseAsync(argv, { from: 'user' });
    return typeof process.exitCode === 'number' ? process.exitCode : EXIT.ok;
  } catch (err) {
    return reportError(err, argv.includes('--json'));
  }
}
