/**
 * `muster bus …`: NATS-micro-like introspection and operator tools for the bus — `ls` (services,
 * instances, methods, request counts, errors, latency; topics and their subscribers), `call`, `tail`.
 */
import { type Command, Option } from 'commander';
import { type Bus, BUS_TAG, openBus } from '../bus/index.js';
import { invalidArgument, isMusterError } from '../errors.js';
import { DEFAULT_ROOT, type Instance } from '../membership/index.js';
import type { Store } from '../store/index.js';
import { listMembers } from './membership-commands.js';
import { jsonOption, printJson, printTable, storeOption, withStore } from './common.js';

const quiet = { info: () => undefined, warn: () => undefined, error: () => undefined };

function tokenOption(): Option {
  return new Option('--token <secret>', 'the bus token shared by all peers').env('MUSTER_BUS_TOKEN');
}

async function withBus<T>(
  store: Store,
  opts: { root: string; token?: string },
  fn: (bus: Bus) => Promise<T>,
): Promise<T> {
  const bus = await openBus(store, {
    root: opts.root,
    logger: quiet,
    ...(opts.token === undefined ? {} : { token: opts.token }),
  });
  try {
    return await fn(bus);
  } finally {
    await bus.close();
  }
}

interface MethodInfo {
  requests: number;
  errors: number;
  meanMs: number;
  maxMs: number;
}

/** What `bus ls` reports for one instance. */
export interface BusInstanceInfo {
  readonly service: string;
  readonly id: string;
  readonly address: string | null;
  readonly state: string;
  readonly health: string;
  readonly methods: Record<string, MethodInfo> | null;
  readonly inFlight: number | null;
  /** Why `$info` failed, when it did. */
  readonly error?: string;
}

/** Reads every bus service instance and asks each for `$info`; topics with their subscriber nodes. */
export async function listBus(
  store: Store,
  bus: Bus,
  root: string,
  service: string | undefined,
): Promise<{ services: BusInstanceInfo[]; topics: { topic: string; subscribers: string[] }[] }> {
  const { instances } = await listMembers(store, service, root);
  const mine = instances.filter((i) => i.tags.includes(BUS_TAG));
  const topics = new Map<string, string[]>();
  const served: Instance[] = [];
  for (const i of mine) {
    if (i.service.startsWith('topic.')) {
      const t = i.service.slice('topic.'.length);
      topics.set(t, [...(topics.get(t) ?? []), i.id]);
    } else if (i.id !== bus.id) served.push(i);
  }
  const services = await Promise.all(
    served.map(async (i): Promise<BusInstanceInfo> => {
      const base = { service: i.service, id: i.id, address: i.address, state: i.state, health: i.health };
      if (i.address === null) return { ...base, methods: null, inFlight: null, error: 'no address' };
      try {
        const info = (await bus.request(i.address, { s: i.service, m: '$info' }, 2000)) as {
          methods: Record<string, MethodInfo>;
          inFlight: number;
        };
        return { ...base, methods: info.methods, inFlight: info.inFlight };
      } catch (err) {
        return {
          ...base,
          methods: null,
          inFlight: null,
          error: isMusterError(err) ? `${err.code}: ${err.message}` : String(err),
        };
      }
    }),
  );
  return {
    services,
    topics: [...topics]
      .map(([topic, subscribers]) => ({ topic, subscribers }))
      .sort((a, b) => (a.topic < b.topic ? -1 : 1)),
  };
}

export function registerBusCommands(program: Command): void {
  const bus = program.command('bus').description('RPC and publish/subscribe between services (docs/bus.md)');

  bus
    .command('ls')
    .description('services, instances, methods, request counts, errors and latency; topics and subscribers')
    .option('--service <name>', 'only this service')
    .option('--root <prefix>', 'key root', DEFAULT_ROOT)
    .addOption(tokenOption())
    .addOption(storeOption())
    .addOption(jsonOption())
    .action(
      async (opts: { store: string; service?: string; root: string; token?: string; json?: boolean }) => {
        await withStore(opts.store, (store) =>
          withBus(store, opts, async (b) => {
            const r = await listBus(store, b, opts.root, opts.service);
            if (opts.json === true) {
              printJson(r);
              return;
            }
            const rows: string[][] = [];
            for (const i of r.services) {
              const methods = Object.entries(i.methods ?? {});
              if (methods.length === 0) {
                rows.push([i.service, i.id, i.address ?? '-', i.state, '-', '-', '-', '-', i.error ?? '']);
                continue;
              }
              for (const [m, s] of methods) {
                rows.push([
                  i.service,
                  i.id,
                  i.address ?? '-',
                  i.state,
                  m,
                  String(s.requests),
                  String(s.errors),
                  `${s.meanMs.toFixed(3)}/${s.maxMs.toFixed(3)}`,
                  '',
                ]);
              }
            }
            printTable(
              [
                'SERVICE',
                'INSTANCE',
                'ADDRESS',
                'STATE',
                'METHOD',
                'REQUESTS',
                'ERRORS',
                'MEAN/MAX MS',
                'NOTE',
              ],
              rows,
            );
            if (r.topics.length > 0) {
              process.stdout.write('\n');
              printTable(
                ['TOPIC', 'SUBSCRIBER NODES'],
                r.topics.map((t) => [t.topic, t.subscribers.join(', ')]),
              );
            }
          }),
        );
      },
    );

  bus
    .command('call')
    .description('call SERVICE METHOD with a JSON argument and print the result')
    .argument('<service>')
    .argument('<method>')
    .argument('[json]', 'the argument, as JSON', 'null')
    .option('--key <key>', 'route to the owner of this key’s partition (fenced)')
    .option('--timeout <duration>', 'call timeout', '5s')
    .option('--root <prefix>', 'key root', DEFAULT_ROOT)
    .addOption(tokenOption())
    .addOption(storeOption())
    .addOption(jsonOption())
    .action(
      async (
        service: string,
        method: string,
        json: string,
        opts: { store: string; root: string; token?: string; key?: string; timeout: string; json?: boolean },
      ) => {
        let args: unknown;
        try {
          args = JSON.parse(json);
        } catch {
          throw invalidArgument(
            `the argument must be JSON, got ${JSON.stringify(json)} (quote strings: '"text"')`,
          );
        }
        await withStore(opts.store, (store) =>
          withBus(store, opts, async (b) => {
            const result = await b.call(service, method, args, {
              timeout: opts.timeout,
              ...(opts.key === undefined ? {} : { key: opts.key }),
            });
            printJson(result);
          }),
        );
      },
    );

  bus
    .command('tail')
    .description('subscribe to TOPIC and print every message as a JSON line until interrupted')
    .argument('<topic>')
    .option('--count <n>', 'exit after this many messages')
    .option('--root <prefix>', 'key root', DEFAULT_ROOT)
    .addOption(tokenOption())
    .addOption(storeOption())
    .action(async (topic: string, opts: { store: string; root: string; token?: string; count?: string }) => {
      const count = opts.count === undefined ? Infinity : Number(opts.count);
      if (!(count > 0)) throw invalidArgument(`--count must be a positive number, got ${String(opts.count)}`);
      await withStore(opts.store, (store) =>
        withBus(store, opts, async (b) => {
          let n = 0;
          await new Promise<void>((resolve, reject) => {
            b.subscribe(topic, (message, d) => {
              process.stdout.write(
                `${JSON.stringify({ topic: d.topic, id: d.id, from: d.from, message })}\n`,
              );
              if (++n >= count) resolve();
            }).catch(reject);
          });
        }),
      );
    });
}
