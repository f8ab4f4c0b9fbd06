/**
 * `muster proxy` (run, reload, status), `muster route pin|unpin|show` and `muster drain`.
 */
import { readFileSync } from 'node:fs';
import { Option, type Command } from 'commander';
import { MusterError } from '../errors.js';
import { DEFAULT_ROOT } from '../membership/index.js';
import {
  drainInstance,
  undrainInstance,
  explainRoute,
  loadProxyConfig,
  pinRoute,
  ProxyMaster,
  unpinRoute,
} from '../proxy/index.js';
import { adminToken } from '../proxy/internal.js';
import { runDaemon } from '../daemon/index.js';
import { jsonOption, printJson, storeOption, withStore } from './common.js';

interface AdminOpts {
  config?: string;
  admin?: string;
  tokenFile?: string;
}

/** The admin URL and token of a running proxy, from `--admin`/`--token-file` or its config file. */
function adminOf(opts: AdminOpts): { url: string; token: string } {
  let url = opts.admin;
  let tokenFile = opts.tokenFile;
  if (opts.config !== undefined) {
    const c = loadProxyConfig(opts.config);
    if (c.admin !== false) {
      url ??= `http://${c.admin.listen}`;
      tokenFile ??= c.admin.tokenFile;
    }
  }
  if (url === undefined || /:0$/.test(url)) {
    throw new MusterError(
      'MUSTER_INVALID_ARGUMENT',
      'give --admin URL (the proxy logs it at start) or --config FILE with a fixed admin.listen port',
    );
  }
  if (tokenFile === undefined) {
    throw new MusterError(
      'MUSTER_INVALID_ARGUMENT',
      'give --token-file FILE or --config FILE with admin.tokenFile',
    );
  }
  return {
    url: url.startsWith('http') ? url : `http://${url}`,
    token: readFileSync(tokenFile, 'utf8').trim(),
  };
}

async function adminCall(opts: AdminOpts, method: string, path: string): Promise<unknown> {
  const { url, token } = adminOf(opts);
  let res: Response;
  try {
    res = await fetch(`${url}${path}`, { method, headers: { authorization: `Bearer ${token}` } });
  } catch (err) {
    throw new MusterError(
      'MUSTER_UNAVAILABLE',
      `cannot reach the proxy's admin API at ${url}: ${(err as Error).message}`,
      { cause: err },
    );
  }
  const body = (await res.json()) as { error?: { code?: string; message?: string } };
  if (!res.ok) {
    const code = (body.error?.code ?? 'MUSTER_INTERNAL') as 'MUSTER_INTERNAL';
    throw new MusterError(code, body.error?.message ?? `admin API answered ${res.status}`);
  }
  return body;
}

function adminOptions(cmd: Command): Command {
  return cmd
    .option('--config <file>', "the proxy's configuration file (for admin.listen and admin.tokenFile)")
    .option('--admin <url>', 'the admin API URL, e.g. http://127.0.0.1:9901')
    .option('--token-file <file>', 'file holding the admin token');
}

export function registerProxyCommands(program: Command): void {
  const proxy = program
    .command('proxy')
    .description('run the shard-routing reverse proxy (docs/proxy.md); subcommands talk to a running one')
    .option('--config <file>', 'configuration file (YAML or JSON)')
    .addOption(new Option('--store <url>', "store URL (overrides the file's store; default $MUSTER_STORE)"))
    .option('--workers <n>', 'worker processes (overrides the file; default one per core)', (v) => Number(v))
    .option(
      '--listen-fd <fd...>',
      "listen on inherited sockets (systemd socket activation: 3, 4, …) instead of the file's listen",
    )
    .action(async (opts: { config?: string; store?: string; workers?: number; listenFd?: string[] }) => {
      if (opts.config === undefined) {
        throw new MusterError('MUSTER_INVALID_ARGUMENT', 'muster proxy needs --config FILE');
      }
      const configFile = opts.config;
      const config = loadProxyConfig(configFile);
      const daemon = await runDaemon(
        {
          name: 'proxy',
          admin:
            config.admin === false
              ? false
              : { listen: config.admin.listen, token: adminToken(config.admin.tokenFile) },
          // the workers drain for up to drainTimeout; the runtime forces only after that
          shutdownTimeout: config.drainTimeoutMs + 10_000,
        },
        async (ctx) => {
          const master = await ProxyMaster.start({
            configFile,
            storeUrl: opts.store ?? process.env['MUSTER_STORE'],
            workers: opts.workers,
            listen: opts.listenFd?.map((fd) => `fd:${fd}`),
            log: ctx.log,
            registry: ctx.metrics,
          });
          ctx.admin.route('GET', '/v1/workers', () => master.status());
          ctx.admin.route('GET', '/v1/held', () => master.held());
          ctx.admin.route('GET', '/v1/routes/:key', (_req, _res, params) =>
            master.explain(params['key'] ?? ''),
          );
          ctx.admin.route('GET', '/v1/metrics', async (_req, res) => {
            const m = await master.metrics();
            res.writeHead(200, { 'content-type': m.contentType });
            res.end(m.text);
          });
          process.stdout.write(
            `${JSON.stringify({ pid: process.pid, listen: master.addresses, ...(master.lineAddresses.length > 0 ? { lines: master.lineAddresses } : {}), admin: ctx.admin.url || null, workers: master.workerPids })}\n`,
          );
          return {
            stop: (force: AbortSignal) => master.stop(force),
            status: () => master.summary(),
            reload: () => master.reload(),
          };
        },
      );
      process.exitCode = await daemon.done;
    });

  adminOptions(
    proxy.command('reload').description('reload a running proxy: new workers accept, old ones drain'),
  ).action(async (opts: AdminOpts & { json?: boolean }) => {
    const r = await adminCall(opts, 'POST', '/v1/reload');
    if (opts.json === true) printJson(r);
    else process.stdout.write(`reloaded: ${JSON.stringify(r)}\n`);
  });
  adminOptions(
    proxy.command('status').description("a running proxy's workers, held requests and route table revision"),
  )
    .addOption(jsonOption())
    .action(async (opts: AdminOpts) => {
      printJson({
        status: await adminCall(opts, 'GET', '/v1/workers'),
        held: await adminCall(opts, 'GET', '/v1/held'),
      });
    });

  const route = program.command('route').description('route pins of a proxied service: pin, unpin, show');
  const common = (cmd: Command): Command =>
    cmd
      .requiredOption('--service <name>', 'the backend service')
      .option('--root <prefix>', 'key root', DEFAULT_ROOT)
      .addOption(storeOption());
  common(
    route
      .command('pin <key> <instance>')
      .description('send every request with KEY to INSTANCE (wins over the hash)'),
  ).action(async (key: string, instance: string, opts: { service: string; root: string; store: string }) => {
    await withStore(opts.store, async (store) => {
      const revision = await pinRoute(store, opts.service, key, instance, { root: opts.root });
      process.stdout.write(`pinned ${key} → ${instance} (revision ${revision})\n`);
    });
  });
  common(route.command('unpin <key>').description('remove the pin of KEY (the hash routes it again)')).action(
    async (key: string, opts: { service: string; root: string; store: string }) => {
      await withStore(opts.store, async (store) => {
        const revision = await unpinRoute(store, opts.service, key, { root: opts.root });
        process.stdout.write(`unpinned ${key} (revision ${revision})\n`);
      });
    },
  );
  common(
    route
      .command('show <key>')
      .description('where KEY goes now and why: a pin, or the partition owner with its fencing token'),
  )
    .option('--partitions <n>', "hash partition count (default: the service spec's)", (v) => Number(v))
    .addOption(jsonOption())
    .action(
      async (
        key: string,
        opts: { service: string; root: string; store: string; partitions?: number; json?: boolean },
      ) => {
        await withStore(opts.store, async (store) => {
          const r = await explainRoute(store, opts.service, key, {
            root: opts.root,
            partitions: opts.partitions,
          });
          if (opts.json === true) return printJson(r);
          const where = r.ok ? `${r.origin} (instance ${r.instance})` : `nowhere now: ${r.reason}`;
          const why =
            r.via === 'route'
              ? `route pin → instance ${r.instance ?? '?'}`
              : `partition ${r.partition ?? '?'}${r.token === undefined ? '' : ` owned by ${r.instance ?? '?'} (fencing token ${r.token})`}`;
          process.stdout.write(`${key} → ${where}\n  why: ${why}\n  revision ${r.revision}\n`);
        });
      },
    );

  common(
    program
      .command('drain <instance>')
      .description(
        "mark INSTANCE draining (services/<s>/drain/<instance>, for as long as it stays registered): its partitions move away at the throttle's pace; --undo ends the drain",
      )
      .option('--undo', 'end the drain: the instance may receive partitions again'),
  ).action(
    async (instance: string, opts: { service: string; root: string; store: string; undo?: boolean }) => {
      await withStore(opts.store, async (store) => {
        if (opts.undo === true) {
          const revision = await undrainInstance(store, opts.service, instance, { root: opts.root });
          process.stdout.write(`instance ${instance} is no longer drained (revision ${revision})\n`);
          return;
        }
        const revision = await drainInstance(store, opts.service, instance, { root: opts.root });
        process.stdout.write(`instance ${instance} is draining (revision ${revision})\n`);
      });
    },
  );
}
