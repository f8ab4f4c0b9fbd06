/** Options and helpers shared by subcommands. */
import { Option } from 'commander';
import { DEFAULT_LOG_LEVEL, LOG_LEVEL_ENV, LOG_LEVELS, runDaemon } from '../daemon/index.js';
import { DEFAULT_STORE_URL, openStore } from '../store/index.js';
import type { Store } from '../store/types.js';

/** `--store URL`, defaulting to `$MUSTER_STORE` or the local default. */
export function storeOption(): Option {
  return new Option('--store <url>', 'store URL (memory:, etcd://host:2379, etcds://…)')
    .env('MUSTER_STORE')
    .default(DEFAULT_STORE_URL);
}

/** `--log-level`, defaulting to `$MUSTER_LOG_LEVEL` or `info`, for the daemons. */
export function daemonLogLevelOption(): Option {
  return new Option('--log-level <level>', 'log level of the JSON logs on stderr')
    .choices(LOG_LEVELS)
    .env(LOG_LEVEL_ENV)
    .default(DEFAULT_LOG_LEVEL);
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
