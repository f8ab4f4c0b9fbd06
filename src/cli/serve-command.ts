/** `muster serve`: the embedded default store (see docs/serve.md). */
import { type Command, InvalidArgumentError, Option } from 'commander';
import { runDaemon } from '../daemon/index.js';
import { addDaemonOptions, type DaemonFlags, daemonOptionsFrom } from './common.js';

export function registerServeCommand(program: Command): void {
  const command = program
    .command('serve')
    .description(
      'run the embedded store: durable, single-node, speaking the etcd v3 API (clients use etcd://HOST:PORT)',
    )
    .addOption(new Option('--data-dir <dir>', 'where the log and snapshots live').default('muster-data'))
    .addOption(
      new Option('--listen <host:port>', 'address to serve on (port 0: any free port)').default(
        '127.0.0.1:2379',
      ),
    )
    .addOption(
      new Option(
        '--token-file <file>',
        'clients must present the token in this file (required off loopback)',
      ),
    )
    .addOption(new Option('--cert <file>', 'PEM certificate chain: serve TLS (clients use etcds://)'))
    .addOption(new Option('--key <file>', 'PEM private key for --cert'))
    .addOption(
      new Option(
        '--progress-notify-interval <duration>',
        'idle interval of progress_notify watch responses',
      ).default('10m'),
    )
    .addOption(
      new Option('--snapshot-records <n>', 'log records between snapshots')
        .default('20000')
        .argParser(positiveInt),
    )
    .addOption(
      new Option(
        '--restore <file>',
        'start from a snapshot taken with the Snapshot RPC (etcdctl snapshot save); needs an empty --data-dir',
      ),
    )
    .addOption(
      new Option(
        '--quota-backend-bytes <n>',
        'raise the NOSPACE alarm and refuse writes when the data directory grows past this (0: no quota)',
      )
        .default('0')
        .argParser(nonNegativeInt),
    )
    .addOption(new Option('--ui', 'serve the read-only dashboard (docs/ui.md) on the admin address, at /'))
    .action(async (opts: ServeFlags) => {
      await serve(opts);
    });
  addDaemonOptions(command);
}

interface ServeFlags extends DaemonFlags {
  dataDir: string;
  listen: string;
  tokenFile?: string;
  cert?: string;
  key?: string;
  progressNotifyInterval: string;
  snapshotRecords: string | number;
  restore?: string;
  quotaBackendBytes: string | number;
  ui?: boolean;
}

function nonNegativeInt(value: string): number {
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < 0) throw new InvalidArgumentError('expected a non-negative integer');
  return n;
}

function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < 1) throw new InvalidArgumentError('expected a positive integer');
  return n;
}

/**
 * Runs on the daemon runtime (docs/daemon.md): until SIGINT or SIGTERM, then flushes, snapshots and
 * exits 0; a second signal or the shutdown timeout forces the stop.
 */
async function serve(opts: ServeFlags): Promise<void> {
  const { startServer } = await import('../server/index.js');
  const daemon = await runDaemon(daemonOptionsFrom('serve', opts), async (ctx) => {
    const server = await startServer({
      dataDir: opts.dataDir,
      listen: opts.listen,
      ...(opts.tokenFile !== undefined ? { tokenFile: opts.tokenFile } : {}),
      ...(opts.cert !== undefined ? { cert: opts.cert } : {}),
      ...(opts.key !== undefined ? { key: opts.key } : {}),
      progressNotifyInterval: opts.progressNotifyInterval,
      snapshotRecords: Number(opts.snapshotRecords),
      ...(opts.restore !== undefined ? { restore: opts.restore } : {}),
      quotaBackendBytes: Number(opts.quotaBackendBytes),
      logger: ctx.log,
      metrics: ctx.metrics,
    });
    process.stdout.write(`muster serve: listening on ${server.url} (data in ${server.dataDir})\n`);
    process.stdout.write(`muster serve: admin on ${ctx.admin.url} (/metrics, /healthz, /v1/status)\n`);
    const ui =
      opts.ui === true
        ? (await import('../ui/index.js')).mountUi(ctx.admin, { store: server.store })
        : undefined;
    if (ui !== undefined) {
      await ui.model.ready();
      process.stdout.write(`muster serve: dashboard on ${ctx.admin.url}/ (read-only)\n`);
    }
    return {
      status: () => ({
        url: server.url,
        dataDir: server.dataDir,
        revision: server.store.revision,
        recovery: server.recovery,
      }),
      // Ends streams, lets calls finish (2 s), flushes the log and writes a snapshot; a forced
      // stop gets no more than that: the runtime exits after its force timeout.
      stop: () => {
        ui?.close();
        return server.close();
      },
    };
  });
  const code = await daemon.done;
  if (code === 0) process.stdout.write('muster serve: stopped\n');
}
