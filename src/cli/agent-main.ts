/**
 * `muster agent …` without the rest of the command line: `bin/muster.js` takes this entry when the
 * first argument is `agent`, so the agent daemon on every host loads the agent's modules only — not
 * the embedded server, the proxy, the bus, the demo or the dashboard (docs/agent.md, "Memory"). It
 * sets the agent's heap defaults first, before any module allocates, then loads the rest.
 */
import { setFlagsFromString } from 'node:v8';

/**
 * 1: in the agent process, V8's young generation stays at its initial 1 MiB semi-spaces. By default
 * it doubles up to 16 MiB semi-spaces after a burst of allocation (module loading, a hundred
 * children starting at once) and keeps them: about 30 MB of RSS that an agent, whose allocations are
 * small and short-lived, never needs — a scavenge of 1 MiB copies only the few survivors. The factor
 * is read at each growth decision, so setting it at start-up works (a semi-space size flag would
 * have to be on the command line). See docs/agent.md, "Memory".
 */
export const AGENT_SEMI_SPACE_GROWTH_FACTOR = 1;

/**
 * Applies {@link AGENT_SEMI_SPACE_GROWTH_FACTOR} unless the operator chose a young-generation size
 * (`--max-semi-space-size`, `--semi-space-growth-factor`… on the command line or in `NODE_OPTIONS`).
 */
export function applyAgentHeapDefaults(): void {
  const flags = [...process.execArgv, ...(process.env.NODE_OPTIONS ?? '').split(/\s+/)];
  if (flags.some((f) => /semi[-_]space/.test(f))) return;
  setFlagsFromString(`--semi-space-growth-factor=${AGENT_SEMI_SPACE_GROWTH_FACTOR}`);
}

/** Runs `muster agent …` with `argv` (without node and script); resolves to the exit status. */
export async function main(argv: string[]): Promise<number> {
  applyAgentHeapDefaults();
  const [{ Command }, { registerAgentCommands }, { EXIT, packageVersion, reportError }] = await Promise.all([
    import('commander'),
    import('./agent-commands.js'),
    import('./report.js'),
  ]);
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
