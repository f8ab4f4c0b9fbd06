/** `muster members`: who is registered in which service, with state, health and age. */
import type { Command } from 'commander';
import { formatDuration } from '../util/duration.js';
import {
  parseDrainKey,
  parseInstanceKey,
  serviceKeys,
  servicesPrefix,
  DEFAULT_ROOT,
} from '../membership/index.js';
import { type Instance, parseInstance } from '../membership/index.js';
import { withDrain } from '../membership/internal.js';
import type { Store } from '../store/index.js';
import { jsonOption, printJson, printTable, storeOption, withStore } from './common.js';

/**
 * Reads the instances of one service, or of every service when `service` is undefined, as discovery
 * sees them: an active instance with an operator's drain key (`muster drain`) is `draining`.
 */
export async function listMembers(
  store: Store,
  service: string | undefined,
  root = DEFAULT_ROOT,
): Promise<{ revision: number; instances: Instance[] }> {
  const keys = service === undefined ? undefined : serviceKeys(root, service);
  const r = await store.range(keys === undefined ? servicesPrefix(root) : keys.instances);
  // Every service's listing holds the drain keys; one service's reads them at the same revision.
  const drainKvs =
    keys === undefined
      ? r.kvs
      : (await store.range(keys.drains, { revision: r.revision, keysOnly: true })).kvs;
  const drained = new Set<string>();
  for (const kv of drainKvs) {
    const where = parseDrainKey(root, kv.key);
    if (where !== undefined) drained.add(`${where.service}/${where.id}`);
  }
  const instances: Instance[] = [];
  for (const kv of r.kvs) {
    const where = parseInstanceKey(root, kv.key);
    if (where === undefined) continue;
    const inst = parseInstance(where.service, kv);
    if (inst !== undefined) instances.push(withDrain(inst, drained.has(`${where.service}/${where.id}`)));
  }
  instances.sort((a, b) =>
    a.service === b.service ? (a.id < b.id ? -1 : 1) : a.service < b.service ? -1 : 1,
  );
  return { revision: r.revision, instances };
}

/** One table row per instance; `now` in epoch ms for the age column. */
export function memberRows(instances: readonly Instance[], now: number, withService: boolean): string[][] {
  return instances.map((i) => {
    const started = Date.parse(i.startedAt);
    const age = Number.isNaN(started) ? '?' : formatDuration(Math.max(0, now - started));
    const row = [i.id, i.address ?? '-', i.state, i.health, String(i.weight), age];
    return withService ? [i.service, ...row] : row;
  });
}

export function registerMembershipCommands(program: Command): void {
  program
    .command('members')
    .description('list the live instances of a service (or of every service)')
    .option('--service <name>', 'only this service')
    .option('--root <prefix>', 'key root', DEFAULT_ROOT)
    .addOption(storeOption())
    .addOption(jsonOption())
    .action(async (opts: { store: string; service?: string; root: string; json?: boolean }) => {
      await withStore(opts.store, async (store) => {
        const { revision, instances } = await listMembers(store, opts.service, opts.root);
        if (opts.json === true) {
          printJson({ revision, instances });
          return;
        }
        const withService = opts.service === undefined;
        const headers = ['ID', 'ADDRESS', 'STATE', 'HEALTH', 'WEIGHT', 'AGE'];
        printTable(
          withService ? ['SERVICE', ...headers] : headers,
          memberRows(instances, Date.now(), withService),
        );
        process.stdout.write(`(${instances.length} instances at revision ${revision})\n`);
      });
    });
}
