/**
 * `muster agent …` without the rest of the command line: `bin/muster.js` takes this entry when the
 * first argument is `agent`, so the agent daemon on every host loads the agent's modules only — not
 * the embedded server, the proxy, the bus, the demo or the dashboard (docs/agent.md, "Memory"). It
 * sets the agent's V8 flags first, before any module allocates or compiles, then loads the rest.
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
 * V8 flags the agent sets for itself, each with its reason: an agent is a daemon that runs little
 * JavaScript once it has started (timers, a keep-alive a second, a watch event now and then), so
 * machine code buys it nothing and costs resident memory. Measured with 100 children (docs/agent.md,
 * "Memory"): together about 14 MB of RSS 2 s after start-up; start-up CPU unchanged (about 1 s
 * either way); idle CPU at most 0.016 % of a core per partition instead of 0.003–0.008 % (goal
 * ≤ 0.1 %). Each is read by V8 at
 * every use, so setting it before the modules load works; `--jitless` and `--lite-mode` would save
 * more but must be on the command line (and disable WebAssembly).
 */
export const AGENT_V8_FLAGS: readonly { readonly flag: string; readonly why: string }[] = [
  {
    flag: '--semi-space-growth-factor=' + String(AGENT_SEMI_SPACE_GROWTH_FACTOR),
    why: 'young generation stays at 1 MiB semi-spaces (see AGENT_SEMI_SPACE_GROWTH_FACTOR)',
  },
  {
    flag: '--no-turbofan',
    why: 'no optimizing compiler (TurboFan; `--no-opt` is its alias): no optimized code, no compiler zones, fewer pages of the node binary touched',
  },
  {
    flag: '--no-sparkplug',
    why: 'no baseline compiler: the code space stays near empty (2.3 MB → 0.2 MB); the interpreter serves an idle daemon',
  },
  {
    flag: '--optimize-for-size',
    why: 'V8 grows the old generation more slowly and compacts more: about 5 MB of heap the agent never fills',
  },
];

/** V8's aliases of the flags above (`--opt` is `--turbofan`). */
const V8_FLAG_ALIASES: Readonly<Record<string, string>> = { opt: 'turbofan' };

/** A V8 flag's name without `--`, `no-` and a value, with `_` as `-`: `--no-opt` → `turbofan`. */
function flagName(flag: string): string {
  const name = flag.replace(/^--/, '').replace(/=.*$/, '').replace(/_/g, '-').replace(/^no-/, '');
  return V8_FLAG_ALIASES[name] ?? name;
}

/**
 * The {@link AGENT_V8_FLAGS} to set given the node options the operator gave (`process.execArgv` and
 * `NODE_OPTIONS`, split): all but those the operator set either way — e.g. `--turbofan` (or `--opt`)
 * or `--max-semi-space-size` (any semi-space flag counts) wins.
 */
export function agentV8Flags(given: readonly string[]): string[] {
  const names = given.filter((f) => f.startsWith('--')).map(flagName);
  return AGENT_V8_FLAGS.map(({ flag }) => flag).filter((flag) => {
    const name = flagName(flag);
    return name.includes('semi-space') ? !names.some((g) => g.includes('semi-space')) : !names.includes(name);
  });
}

/** Sets {@link agentV8Flags} for this process's node options, before any module loads. */
export function applyAgentHeapDefaults(): void {
  const given = [...process.execArgv, ...(process.env.NODE_OPTIONS ?? '').split(/\s+/)];
  for (const flag of agentV8Flags(given)) setFlagsFromString(flag);
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
