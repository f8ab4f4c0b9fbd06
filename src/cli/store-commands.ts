/** `muster store …`: low-level access to the store, for operators and scripts. */
import type { Command } from 'commander';
import { textOf } from '../store/index.js';
import { jsonOption, printJson, printTable, storeOption, withStore } from './common.js';

export function registerStoreCommands(program: Command): void {
  const store = program.command('store').description('inspect the store directly (keys, revisions)');
  store
    .command('get')
    .description('list keys under a prefix with their revisions')
    .argument('<prefix>', 'key prefix, e.g. /muster/services/')
    .addOption(storeOption())
    .addOption(jsonOption())
    .action(async (prefix: string, opts: { store: string; json?: boolean }) => {
      await withStore(opts.store, async (s) => {
        const r = await s.range(prefix);
        if (opts.json === true) {
          printJson({
            revision: r.revision,
            kvs: r.kvs.map((kv) => ({ ...kv, value: textOf(kv.value) })),
          });
          return;
        }
        printTable(
          ['KEY', 'MOD', 'VER', 'LEASE', 'VALUE'],
          r.kvs.map((kv) => [
            kv.key,
            String(kv.modRevision),
            String(kv.version),
            kv.lease,
            textOf(kv.value).slice(0, 60),
          ]),
        );
        process.stdout.write(`(${r.count} keys at revision ${r.revision})\n`);
      });
    });
}
