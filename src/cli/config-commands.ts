/**
 * `muster config …`: create configurations, schedule and cancel versions, read what is in force.
 * Reads are linearizable, so `muster config get NAME --json` is a fresh answer for any language.
 */
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import {
  cancelConfig,
  ConfigRelay,
  type ConfigVersion,
  diffValues,
  holdingOf,
  initConfig,
  openConfig,
  publishConfig,
  readConfig,
  readHolders,
  recordHolding,
  relayHolding,
  type HolderRecord,
  Timeline,
  timelineOf,
  waitForHolders,
} from '../config/index.js';
import { openSession } from '../membership/index.js';
import { hostname } from 'node:os';
import { registerRelayMetrics } from '../config/internal.js';
import { runDaemon } from '../daemon/index.js';
import { invalidArgument, MusterError } from '../errors.js';
import { openStore } from '../store/index.js';
import type { Store } from '../store/index.js';
import { formatDuration } from '../util/duration.js';
import {
  addDaemonOptions,
  type DaemonFlags,
  daemonOptionsFrom,
  jsonOption,
  printJson,
  printTable,
  runUntilStopped,
  storeOption,
  withStore,
} from './common.js';
import { pause } from '../util/abort.js';

interface StoreOpts {
  store: string;
  json?: boolean;
}

export function registerConfigCommands(program: Command): void {
  const config = program
    .command('config')
    .description('scheduled configuration: versions that every process switches to at the same instant');

  config
    .command('init')
    .description('create a configuration with its policy (staleness, clock skew, lead time, JSON Schema)')
    .argument('<name>', 'configuration name')
    .option('--schema <file>', 'JSON Schema file that every value must satisfy')
    .option('--max-staleness <duration>', 'refuse tasks when not verified for this long', '2s')
    .option('--max-clock-skew <duration>', 'assumed bound on clock error between machines', '250ms')
    .option(
      '--min-lead-time <duration>',
      'earliest activation after publishing (default: staleness + 2·skew + 500ms)',
    )
    .option('--keep <n>', 'past versions to keep', '100')
    .addOption(storeOption())
    .addOption(jsonOption())
    .action(async (name: string, opts: StoreOpts & Record<string, string | undefined>) => {
      const schema = opts.schema === undefined ? undefined : readJsonFile(opts.schema, 'schema');
      await withStore(opts.store, async (store) => {
        const policy = await initConfig(store, name, {
          maxStaleness: opts.maxStaleness ?? '2s',
          maxClockSkew: opts.maxClockSkew ?? '250ms',
          ...(opts.minLeadTime === undefined ? {} : { minLeadTime: opts.minLeadTime }),
          ...(schema === undefined ? {} : { schema }),
          keepVersions: Number(opts.keep ?? '100'),
        });
        if (opts.json === true) printJson({ name, policy });
        else
          out(
            `created configuration '${name}': maxStaleness ${formatDuration(policy.maxStalenessMs)}, ` +
              `maxClockSkew ${formatDuration(policy.maxClockSkewMs)}, minLeadTime ${formatDuration(policy.minLeadTimeMs)}` +
              `${schema === undefined ? '' : ', with a JSON Schema'}`,
          );
      });
    });

  config
    .command('set')
    .description('schedule a new version (give --in or --at)')
    .argument('<name>', 'configuration name')
    .requiredOption('--file <file>', 'JSON file with the value (- for standard input)')
    .option('--in <duration>', 'activate this long from now, e.g. 5m')
    .option('--at <time>', 'activate at this instant (ISO-8601, e.g. 2026-01-01T10:00:00Z)')
    .option('--note <text>', 'why this change')
    .option('--wait', 'return only when every live instance holds the new version')
    .option(
      '--timeout <duration>',
      'with --wait: give up (MUSTER_NOT_PROPAGATED, naming stragglers) after this long',
      '30s',
    )
    .addOption(storeOption())
    .addOption(jsonOption())
    .action(
      async (
        name: string,
        opts: StoreOpts & {
          file: string;
          in?: string;
          at?: string;
          note?: string;
          wait?: boolean;
          timeout: string;
        },
      ) => {
        const value = readJsonFile(opts.file, 'value');
        await withStore(opts.store, async (store) => {
          const v = await publishConfig(store, name, value, {
            ...(opts.in === undefined ? {} : { in: opts.in }),
            ...(opts.at === undefined ? {} : { at: parseInstant(opts.at) }),
            ...(opts.note === undefined ? {} : { note: opts.note }),
          });
          if (opts.json !== true)
            out(
              `scheduled '${name}' version ${v.version} at ${iso(v.activateAt)} (in ${formatDuration(v.activateAt - Date.now())})`,
            );
          if (opts.wait !== true) {
            if (opts.json === true) printJson(v);
            return;
          }
          const started = Date.now();
          const { holders } = await waitForHolders(store, name, v.version, { timeout: opts.timeout });
          if (opts.json === true) printJson({ ...v, holders, propagatedMs: Date.now() - started });
          else
            out(
              `every live instance (${holders.length}) holds version ${v.version} after ${formatDuration(Date.now() - started)}`,
            );
        });
      },
    );

  config
    .command('get')
    .description('print the version in force now (or at --at TIME)')
    .argument('<name>', 'configuration name')
    .option('--at <time>', 'instant (ISO-8601 or epoch ms); default now')
    .addOption(storeOption())
    .addOption(jsonOption())
    .action(async (name: string, opts: StoreOpts & { at?: string }) => {
      await withStore(opts.store, async (store) => {
        const sent = Date.now();
        const state = await readConfig(store, name);
        const t = opts.at === undefined ? Date.now() : parseInstant(opts.at);
        const v = timelineOf(state).at(t);
        if (v === undefined) {
          throw new MusterError(
            'MUSTER_MISSING_CONFIG',
            `configuration '${name}' has no version in force at ${iso(t)}`,
            {
              details: { config: name, at: t },
            },
          );
        }
        // A linearizable read sent at `sent` vouches for every instant up to sent + maxStaleness.
        const final = t <= sent + state.policy.maxStalenessMs;
        if (opts.json === true) printJson({ name, at: t, final, revision: state.revision, ...v });
        else {
          out(
            `${name} version ${v.version} (in force since ${iso(v.activateAt)})${final ? '' : ' — as scheduled now'}`,
          );
          out(JSON.stringify(v.value, null, 2));
        }
      });
    });

  config
    .command('timeline')
    .description('past, current and scheduled versions, with a live countdown on a terminal')
    .argument('<name>', 'configuration name')
    .option('--once', 'print once and exit (the default when not on a terminal)')
    .addOption(storeOption())
    .addOption(jsonOption())
    .action(async (name: string, opts: StoreOpts & { once?: boolean }) => {
      await withStore(opts.store, async (store) => {
        if (opts.json === true) {
          const state = await readConfig(store, name);
          const holders = await readHolders(store, name);
          const cur = timelineOf(state).at(Date.now());
          const holding = holdingOf(
            state.versions.map((v) => v.version),
            holders,
          );
          printJson({
            ...state,
            versions: state.versions.map((v, i) => ({
              ...v,
              holders: holding[i]?.holders,
              missing: holding[i]?.missing,
            })),
            current: cur?.version ?? null,
            instances: holders,
          });
          return;
        }
        if (opts.once === true || process.stdout.isTTY !== true) {
          printTimeline(name, (await readConfig(store, name)).versions, await readHolders(store, name));
          return;
        }
        await liveTimeline(store, name);
      });
    });

  config
    .command('cancel')
    .description('cancel a scheduled version (only while it is at least minLeadTime away)')
    .argument('<name>', 'configuration name')
    .argument('<version>', 'version number')
    .addOption(storeOption())
    .addOption(jsonOption())
    .action(async (name: string, version: string, opts: StoreOpts) => {
      await withStore(opts.store, async (store) => {
        const v = await cancelConfig(store, name, parseVersion(version));
        if (opts.json === true) printJson(v);
        else out(`cancelled '${name}' version ${v.version} (was due at ${iso(v.activateAt)})`);
      });
    });

  config
    .command('diff')
    .description('show what changed between two versions')
    .argument('<name>', 'configuration name')
    .argument('<v1>', 'older version')
    .argument('<v2>', 'newer version')
    .addOption(storeOption())
    .addOption(jsonOption())
    .action(async (name: string, v1: string, v2: string, opts: StoreOpts) => {
      await withStore(opts.store, async (store) => {
        const state = await readConfig(store, name);
        const find = (n: number): ConfigVersion => {
          const v = state.versions.find((x) => x.version === n);
          if (v === undefined) {
            throw new MusterError(
              'MUSTER_NOT_FOUND',
              `configuration '${name}' has no version ${n} (kept: ${state.versions.map((x) => x.version).join(', ') || 'none'})`,
              {
                details: { config: name, version: n },
              },
            );
          }
          return v;
        };
        const changes = diffValues(find(parseVersion(v1)).value, find(parseVersion(v2)).value);
        if (opts.json === true) printJson(changes);
        else if (changes.length === 0) out('no differences');
        else
          for (const c of changes) {
            const sign = c.kind === 'added' ? '+' : c.kind === 'removed' ? '-' : '~';
            const detail =
              c.kind === 'changed'
                ? `${JSON.stringify(c.before)} → ${JSON.stringify(c.after)}`
                : JSON.stringify(c.kind === 'added' ? c.after : c.before);
            out(`${sign} ${c.path}: ${detail}`);
          }
      });
    });

  registerRelayCommand(config);

  config
    .command('watch')
    .description('follow a configuration: versions received, switches, staleness (Ctrl-C to stop)')
    .argument('<name>', 'configuration name')
    .option('--instance <id>', 'record what this watcher holds under this id (default: host-pid)')
    .option(
      '--session-ttl <duration>',
      "the record's lease TTL: it disappears this long after the watcher dies",
      '3s',
    )
    .addOption(storeOption())
    .addOption(jsonOption())
    .action(async (name: string, opts: StoreOpts & { instance?: string; sessionTtl: string }) => {
      await withStore(opts.store, async (store) => {
        await readConfig(store, name); // MUSTER_NOT_FOUND early
        const instance = opts.instance ?? `${hostname()}-${process.pid}`;
        const emit = (event: string, fields: Record<string, unknown>, text: string): void =>
          opts.json === true
            ? out(JSON.stringify({ time: iso(Date.now()), event, ...fields }))
            : out(`${iso(Date.now())}  ${text}`);
        await runUntilStopped('config-watch', async (signal) => {
          const h = openConfig(store, name, { signal });
          const session = await openSession(store, { signal, ttl: opts.sessionTtl });
          const recorder = recordHolding(h, {
            store,
            instance,
            lease: session.leaseId,
            signal: session.lost,
          });
          try {
            h.on('version', ({ version: v, cancelled }) =>
              emit(
                cancelled ? 'cancelled' : 'version',
                { version: v.version, activateAt: v.activateAt },
                `${cancelled ? 'cancelled' : 'received'} version ${v.version} (activates ${iso(v.activateAt)})`,
              ),
            );
            h.on('switch', (s) =>
              emit(
                'switch',
                { version: s.version.version, latenessMs: s.latenessMs },
                `switched to version ${s.version.version} (${s.latenessMs.toFixed(1)} ms after its instant)`,
              ),
            );
            h.on('invalid', (e) =>
              emit(
                'invalid',
                { key: e.key, error: e.error.toJSON() },
                `ignored ${e.key}: ${e.error.code}: ${e.error.message}`,
              ),
            );
            await h.ready();
            await recorder.flush(); // 'ready' means: this instance's holding is in the store
            const cur = safeCurrent(() => h.current());
            emit(
              'ready',
              { version: cur?.version ?? null },
              `watching '${name}'; in force: ${cur === undefined ? 'none' : `version ${cur.version}`}`,
            );
            let lastState = h.state;
            while (!signal.aborted) {
              await pause(100, signal);
              if (h.state !== lastState && h.state !== 'closed') {
                lastState = h.state;
                emit(
                  'state',
                  { state: lastState },
                  lastState === 'stale'
                    ? 'STALE: cannot verify the configuration; tasks would be refused'
                    : 'fresh again',
                );
              }
            }
          } finally {
            await recorder.close();
            await h.close();
            await session.close();
          }
        });
      });
    });
}

/**
 * `muster config relay`: the per-host relay as a daemon (the agent will run the same thing). Serves
 * every configuration its clients ask for on a Unix socket, with a shared table per configuration,
 * until SIGINT or SIGTERM; then closes the socket and removes the tables.
 */
function registerRelayCommand(config: Command): void {
  const relay = config.command('relay');
  relay
    .description(
      "serve this host's processes over a local socket: one watch on the store for all of them, " +
        'and a shared table they read without waking (Ctrl-C to stop)',
    )
    .requiredOption('--listen <path>', 'Unix socket to listen on, e.g. /run/muster/relay.sock')
    .option('--max-staleness <duration>', "bound for the relay's own proofs", '2s')
    .option('--no-tables', 'no shared tables: processes get proofs pushed on the socket instead')
    .option('--instance <id>', "record what this host's processes hold under this id (default: <host>/relay)")
    .addOption(storeOption())
    .addOption(jsonOption())
    .action(async (opts: RelayFlags) => {
      const daemon = await runDaemon(daemonOptionsFrom('relay', opts), async (ctx) => {
        const store = await openStore(opts.store);
        let relay: ConfigRelay;
        let session: Awaited<ReturnType<typeof openSession>> | undefined;
        let holding: ReturnType<typeof relayHolding> | undefined;
        try {
          // The holder record of this host's processes lives on the relay's session (docs/config.md).
          session = await openSession(store, { signal: ctx.stopping });
          holding = relayHolding({
            store,
            lease: session.leaseId,
            instance: opts.instance ?? `${hostname()}/relay`,
            maxStaleness: opts.maxStaleness,
            onError: (err) => ctx.log.warn({ err }, 'could not record what this host holds'),
          });
          relay = await ConfigRelay.start({
            store,
            listen: opts.listen,
            maxStaleness: opts.maxStaleness,
            tables: opts.tables,
            onPrefixUpdate: holding.onPrefixUpdate,
          });
        } catch (err) {
          await holding?.close();
          await session?.close();
          await store.close();
          throw err;
        }
        registerRelayMetrics(ctx.metrics, relay);
        const tables = relay.tables;
        if (opts.json === true)
          out(
            JSON.stringify({
              time: iso(Date.now()),
              event: 'listening',
              socket: relay.address,
              tables: tables ?? null,
              admin: ctx.admin.url,
            }),
          );
        else {
          out(
            `relay listening on ${relay.address}${tables === undefined ? ' (no shared tables)' : `, shared tables in ${tables}`}`,
          );
          out(`relay admin on ${ctx.admin.url} (/metrics, /healthz, /v1/status)`);
        }
        return {
          status: () => relay.stats(),
          stop: async () => {
            try {
              await relay.close();
              await holding.close();
              await session.close();
            } finally {
              await store.close();
            }
          },
        };
      });
      if ((await daemon.done) !== 0) return;
      if (opts.json === true) out(JSON.stringify({ time: iso(Date.now()), event: 'closed' }));
      else out('relay closed');
    });
  addDaemonOptions(relay);
}

interface RelayFlags extends StoreOpts, DaemonFlags {
  listen: string;
  maxStaleness: string;
  tables: boolean;
  instance?: string;
}

async function liveTimeline(store: Store, name: string): Promise<void> {
  await readConfig(store, name);
  await runUntilStopped('config-timeline', async (signal) => {
    const h = openConfig(store, name, { signal });
    try {
      await h.ready();
      while (!signal.aborted) {
        const versions = (await readConfig(store, name)).versions;
        process.stdout.write('\x1b[H\x1b[2J');
        printTimeline(name, versions);
        out(`\n${h.state === 'fresh' ? 'live' : h.state.toUpperCase()} — Ctrl-C to stop`);
        await pause(1000, signal);
      }
    } finally {
      await h.close();
    }
  });
}

function printTimeline(
  name: string,
  versions: readonly ConfigVersion[],
  holders?: readonly HolderRecord[],
): void {
  const now = Date.now();
  const holding =
    holders === undefined
      ? undefined
      : holdingOf(
          versions.map((v) => v.version),
          holders,
        );
  const cur = new Timeline(versions.filter((v) => v.cancelledAt === undefined)).at(now);
  const rows = versions.map((v, i) => {
    const h = holding?.[i];
    const held =
      h === undefined
        ? []
        : [
            `${h.holders.length}/${h.holders.length + h.missing.length}`,
            h.missing.length === 0 ? '' : shortList(h.missing),
          ];
    const state =
      v.cancelledAt !== undefined
        ? 'cancelled'
        : v.version === cur?.version
          ? 'CURRENT'
          : v.activateAt > now
            ? `in ${formatDuration(v.activateAt - now)}`
            : 'past';
    return [
      String(v.version),
      iso(v.activateAt),
      state,
      v.author ?? '',
      v.note ?? '',
      JSON.stringify(v.value).slice(0, 40),
      ...held,
    ];
  });
  printTable(
    [
      'VERSION',
      'ACTIVATES',
      'STATE',
      'AUTHOR',
      'NOTE',
      'VALUE',
      ...(holding === undefined ? [] : ['HELD', 'NOT YET']),
    ],
    rows,
  );
  if (versions.length === 0) out(`(configuration '${name}' has no versions yet)`);
}

function shortList(names: readonly string[]): string {
  const sorted = [...names].sort();
  return sorted.length <= 5 ? sorted.join(',') : `${sorted.slice(0, 5).join(',')},… (+${sorted.length - 5})`;
}

function safeCurrent(fn: () => ConfigVersion): ConfigVersion | undefined {
  try {
    return fn();
  } catch {
    return undefined;
  }
}

function readJsonFile(file: string, what: string): unknown {
  let text: string;
  try {
    text = readFileSync(file === '-' ? 0 : file, 'utf8');
  } catch (err) {
    throw invalidArgument(`cannot read the ${what} file '${file}': ${(err as Error).message}`);
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw invalidArgument(`the ${what} file '${file}' is not JSON: ${(err as Error).message}`);
  }
}

function parseInstant(text: string): number {
  const t = /^\d+$/.test(text) ? Number(text) : Date.parse(text);
  if (!Number.isFinite(t))
    throw invalidArgument(`'${text}' is not an instant; use ISO-8601, e.g. 2026-01-01T10:00:00Z`);
  return t;
}

function parseVersion(text: string): number {
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < 1) throw invalidArgument(`'${text}' is not a version number`);
  return n;
}

function iso(t: number): string {
  return new Date(t).toISOString();
}

function out(line: string): void {
  process.stdout.write(`${line}\n`);
}
