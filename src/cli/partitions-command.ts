/** `muster partitions`: per partition, the assigned instance, the owner, its fencing token and since when. */
import type { Command } from 'commander';
import { DEFAULT_ROOT } from '../membership/index.js';
import { openStore } from '../store/index.js';
import { type PartitionStatus, readPartitionStatus } from '../partitions/index.js';
import { formatDuration } from '../util/duration.js';
import { jsonOption, printJson, printTable, storeOption } from './common.js';

/** Table rows for a status; `now` in epoch ms for the age column. */
export function partitionRows(status: PartitionStatus, now: number): string[][] {
  return status.partitions.map((p) => {
    const since = p.since === null ? Number.NaN : Date.parse(p.since);
    return [
      p.partition,
      p.assigned ?? '-',
      p.owner ?? '-',
      p.token === null ? '-' : String(p.token),
      Number.isNaN(since) ? '-' : formatDuration(Math.max(0, now - since)),
      p.settled ? '' : p.owner === null ? 'unowned' : 'moving',
    ];
  });
}

export function registerPartitionsCommand(program: Command): void {
  program
    .command('partitions')
    .description("show a service's partitions: assigned instance, owner, fencing token and age")
    .requiredOption('--service <name>', 'the service')
    .option('--root <prefix>', 'key root', DEFAULT_ROOT)
    .addOption(storeOption())
    .addOption(jsonOption())
    .action(async (opts: { store: string; service: string; root: string; json?: boolean }) => {
      const store = await openStore(opts.store);
      try {
        const status = await readPartitionStatus(store, opts.service, { root: opts.root });
        if (opts.json === true) {
          printJson(status);
          return;
        }
        if (!status.hasSpec) {
          process.stdout.write(`service ${opts.service} has no partition spec (no instance has joined it)\n`);
        }
        printTable(
          ['PARTITION', 'ASSIGNED', 'OWNER', 'TOKEN', 'SINCE', 'NOTE'],
          partitionRows(status, Date.now()),
        );
        const moving = status.partitions.filter((p) => !p.settled).length;
        process.stdout.write(
          `${status.partitions.length} partitions, ${status.instances.length} instances, ${moving} not settled, revision ${status.revision}\n`,
        );
      } finally {
        await store.close();
      }
    });
}
