/**
 * `muster bus …`: NATS-micro-like introspection and operator tools for the bus — `ls` (services,
 * instances, methods, request counts, errors, latency; topics and their subscribers), `call`, `tail`.
 */
import { type Command, Option } from 'commander';
import { readFileSync } from 'node:fs';
import { type Bus, BUS_TAG, type BusTlsOptions, openBus } from '../bus/index.js';
import { invalidArgument, isMusterError } from '../errors.js';
import { DEFAULT_ROOT, type Instance } from '../membership/index.js';
import type { Store } from '../store/index.js';
import { listMembers } from './membership-commands.js';
import { jsonOption, printJson, printTable, storeOption, withStore } from './common.js';

const quiet = { info: () => undefined, warn: () => undefined, error: () => undefined };

/** What every `muster bus` command takes to join the bus as a peer: the token and the TLS material. */
interface PeerOpts {
  root: string;
  token?: string;
  tlsCert?: string;
  tlsKey?: string;
  tlsCa?: string;
  tlsMutual?: boolean;
}

/** Adds `--token` and the `--tls-*` options (each with a `MUSTER_BUS_*` variable) to `cmd`. */
function addPeerOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--token <secret>', 'the bus token shared by all peers').env('MUSTER_BUS_TOKEN'))
    .addOption(
      new Option('--tls-cert <file>', 'PEM certificate: use TLS between peers (docs/bus.md)').env(
        'MUSTER_BUS_TLS_CERT',
      ),
    )
    .addOption(new Option('--tls-key <file>', 'PEM private key of --tls-cert').env('MUSTER_BUS_TLS_KEY'))
    .addOption(
      new Option('--tls-ca <file>', "PEM CA the peers' certificates chain to (default: public CAs)").env(
        'MUSTER_BUS_TLS_CA',
      ),
    )
    .addOption(
      new Option(
        '--tls-mutual',
        'mutual TLS: require a trusted certificate of every peer that dials this node',
      ).env('MUSTER_BUS_TLS_MUTUAL'),
    );
}

function readPem(file: string, flag: string): Buffer {
  try {
    return readFileSync(file);
  } catch (err) {
    throw invalidArgument(`cannot read ${flag} ${file}: ${(err as Error).message}`);
  }
}

/** The bus's `tls` option from the flags; `undefined` without any `--tls-*` flag. */
export function tlsFromFlags(opts: PeerOpts): BusTlsOptions | undefined {
  const given =
    [opts.tlsCert, opts.tlsKey, opts.tlsCa].some((v) => v !== undefined) || opts.tlsMutual === true;
  if (!given) return undefined;
  if (opts.tlsCert === undefined || opts.tlsKey === undefined)
    throw invalidArgument('TLS needs both --tls-cert and --tls-key (this node also accepts connections)');
  return {
    cert: readPem(opts.tlsCert, '--tls-cert'),
    key: readPem(opts.tlsKey, '--tls-key'),
    ...(opts.tlsCa === undefined ? {} : { ca: readPem(opts.tlsCa, '--tls-ca') }),
    ...(opts.tlsMutual === true ? { mutual: true } : {}),
  };
}

async function withBus<T>(store: Store, opts: PeerOpts, fn: (bus: Bus) => Promise<T>): Promise<T> {
  const tls = tlsFromFlags(opts);
  const bus = await openBus(store, {
    root: opts.root,
    logger: quiet,
    ...(opts.token === undefined ? {} : { token: opts.token }),
    ...(tls === undefined ? {} : { tls }),
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

  addPeerOptions(bus.command('ls'))
    .description('services, instances, methods, request counts, errors and latency; topics and subscribers')
    .option('--service <name>', 'only this service')
    .option('--root <prefix>', 'key root', DEFAULT_ROOT)
    .addOption(storeOption())
    .addOption(jsonOption())
    .action(async (opts: PeerOpts & { store: string; service?: string; json?: boolean }) => {
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
    });

  addPeerOptions(bus.command('call'))
    .description('call SERVICE METHOD with a JSON argument and print the result')
    .argument('<service>')
    .argument('<method>')
    .argument('[json]', 'the argument, as JSON', 'null')
    .option('--key <key>', 'route to the owner of this key’s partition (fenced)')
    .option('--timeout <duration>', 'call timeout', '5s')
    .option('--root <prefix>', 'key root', DEFAULT_ROOT)
    .addOption(storeOption())
    .addOption(jsonOption())
    .action(
      async (
        service: string,
        method: string,
        json: string,
        opts: PeerOpts & { store: string; key?: string; timeout: string; json?: boolean },
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

  addPeerOptions(bus.command('tail'))
    .description('subscribe to TOPIC and print every message as a JSON line until interrupted')
    .argument('<topic>')
    .option('--count <n>', 'exit after this many messages')
    .option('--root <prefix>', 'key root', DEFAULT_ROOT)
    .addOption(storeOption())
    .action(async (topic: string, opts: PeerOpts & { store: string; count?: string }) => {
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
