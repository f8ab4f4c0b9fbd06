/**
 * `muster ui --store URL`: the live dashboard, on the daemon runtime. The page is served by the
 * daemon's loopback admin server (`--admin`, default 127.0.0.1:0); writes need `--write-token-file`.
 */
import type { Command } from 'commander';
import { runDaemon } from '../daemon/index.js';
import { openStore } from '../store/index.js';
import { mountUi } from '../ui/index.js';
import { readTokenFile } from '../util/token.js';
import { addDaemonOptions, type DaemonFlags, daemonOptionsFrom, storeOption } from './common.js';

interface UiFlags extends DaemonFlags {
  store: string;
  writeTokenFile?: string;
}

export function registerUiCommand(program: Command): void {
  const command = program
    .command('ui')
    .description(
      'a live web view of the fleet on loopback: partition maps, instances, configuration timelines, routes',
    )
    .option(
      '--write-token-file <file>',
      'allow pins and cancellations to callers presenting this token (default: read-only)',
    )
    .addOption(storeOption());
  addDaemonOptions(command);
  command.action(async (opts: UiFlags) => {
    const writeToken =
      opts.writeTokenFile === undefined
        ? undefined
        : readTokenFile(opts.writeTokenFile, '--write-token-file');
    const daemon = await runDaemon(daemonOptionsFrom('ui', opts), async (ctx) => {
      const store = await openStore(opts.store);
      const ui = mountUi(ctx.admin, { store, ...(writeToken === undefined ? {} : { writeToken }) });
      await ui.model.ready();
      process.stdout.write(
        `muster ui: open ${ctx.admin.url}/ (${writeToken === undefined ? 'read-only' : 'writes need the token'})\n`,
      );
      return {
        status: () => ({ url: ctx.admin.url, relists: ui.model.relists }),
        stop: async () => {
          ui.close();
          await store.close();
        },
      };
    });
    await daemon.done;
  });
}
