/** Options and helpers shared by subcommands. */
import { Option } from 'commander';
import { DEFAULT_STORE_URL, openStore } from '../store/index.js';
import type { Store } from '../store/types.js';

/** `--store URL`, defaulting to `$MUSTER_STORE` or the local default. */
export function storeOption(): Option {
  return new Option('--store <url>', 'store URL (memory:, etcd://host:2379, etcds://…)')
    .env('MUSTER_STORE')
    .default(DEFAULT_STORE_URL);
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
