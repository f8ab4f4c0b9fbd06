/** Options and helpers shared by subcommands. */
import { type Command, Option } from 'commander';
import {
  DEFAULT_ADMIN_LISTEN,
  DEFAULT_LOG_LEVEL,
  type DaemonOptions,
  LOG_LEVEL_ENV,
  LOG_LEVELS,
  runDaemon,
} from '../daemon/index.js';
import { DEFAULT_STORE_URL, openStore } from '../store/index.js';
import type { Store } from '../store/index.js';

/** `--store URL`, defaulting to `$MUSTER_STORE` or the local default. */
export function storeOption(): Option {
  return new Option('--store <url>', 'store URL (memory:, etcd://host:2379, etcds://…)')
    .env('MUSTER_STORE')
    .default(DEFAULT_STORE_URL);
}

/** The flags of every daemon command (`serve`, `config relay`, the agent, the proxy, the bus). */
export interface DaemonFlags {
  logLevel: string;
  admin: string;
  adminTokenFile?: string;
  shutdownTimeout: string;
}

/**
 * Adds the daemon flags to `command`: `--log-level` (default `$MUSTER_LOG_LEVEL`, else `info`),
 * `--admin`, `--admin-token-file`, `--shutdown-timeout` (docs/daemon.md).
 */
export function addDaemonOptions(command: Command): Command {
  return command
    .addOption(
      new Option('--log-level <level>', 'log level of the JSON logs on stderr')
        .choices(LOG_LEVELS)
        .env(LOG_LEVEL_ENV)
        .default(DEFAULT_LOG_LEVEL),
    )
    .addOption(
      new Option(
        '--admin <host:port>',
        'admin HTTP server: /metrics, /healthz, /v1/status (port 0: any free port)',
      ).default(DEFAULT_ADMIN_LISTEN),
    )
    .addOption(
      new Option('--admin-token-file <file>', 'bearer token for the admin server (required off loopback)'),
    )
    .addOption(
      new Option('--shutdown-timeout <duration>', 'graceful stop deadline; then the stop is forced').default(
        '30s',
      ),
    );
}

/** The runtime's options for daemon `name` from its flags. */
export function daemonOptionsFrom(name: string, flags: DaemonFlags): DaemonOptions {
  return {
    name,
    logLevel: flags.logLevel,
    admin: {
      listen: flags.admin,
      ...(flags.adminTokenFile !== undefined ? { tokenFile: flags.adminTokenFile } : {}),
    },
    shutdownTimeout: flags.shutdownTimeout,
  };
}

export function jsonOption(): Option {
  return new Option('--json', 'print machine-readable JSON');
}

/** Opens the store, runs `fn`, and always closes the store. */
export async function withStore<T>(url: string, fn: (store: Store) => Promise<T>): Promise<T> {
  const store = await openStore(url);
  try {
    return await fn(store);
  } finally {
    await store.close();
  }
}

/** Prints rows as an aligned text table. */
export function printTable(headers: readonly string[], rows: readonly (readonly string[])[]): void {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]): string =>
    cells
      .map((c, i) => c.padEnd(widths[i] ?? 0))
      .join('  ')
      .trimEnd();
  process.stdout.write(`${line(headers)}\n`);
  for (const r of rows) process.stdout.write(`${line(r)}\n`);
}

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

/**
 * Runs a foreground command (`config watch`, `config timeline --live`) until it returns or the user
 * stops it, on the daemon runtime's signal rules (docs/daemon.md): the first Ctrl-C or SIGTERM aborts
 * `signal` and waits for `work` to return, a second one forces the exit. No admin server; logs at
 * `warn` unless MUSTER_LOG_LEVEL says otherwise. Rethrows what `work` threw, so main() prints it.
 */
export async function runUntilStopped(
  name: string,
  work: (signal: AbortSignal) => Promise<void>,
): Promise<void> {
  let failure: Error | undefined;
  let finished: Promise<void> = Promise.resolve();
  const daemon = await runDaemon(
    { name, admin: false, logLevel: process.env[LOG_LEVEL_ENV] ?? 'warn' },
    async (ctx) => {
      finished = work(ctx.stopping).catch((err: unknown) => {
        failure = err instanceof Error ? err : new Error(String(err));
      });
      return { stop: () => finished };
    },
  );
  // Work that ends by itself (an error, or nothing left to do) ends the command.
  void finished.then(() => daemon.stop());
  await daemon.done;
  if (failure !== undefined) throw failure;
}
