/**
 * `muster agent --config agent.yaml` (run the agent), `muster agent reload`, `muster agent schema`,
 * and `muster status` (instances, their partitions, child pids, readiness, restarts, checks).
 */
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import {
  AGENT_CONFIG_SCHEMA,
  type AgentRecord,
  agentRunFile,
  loadAgentConfig,
  runAgent,
} from '../agent/index.js';
import { MusterError } from '../errors.js';
import { DEFAULT_ROOT, serviceKeys } from '../membership/index.js';
import { readPartitionStatus } from '../partitions/index.js';
import { jsonOf, openStore } from '../store/index.js';
import type { Store } from '../store/index.js';
import { formatDuration } from '../util/duration.js';
import {
  addDaemonOptions,
  type DaemonFlags,
  jsonOption,
  printJson,
  printTable,
  storeOption,
} from './common.js';

export function registerAgentCommands(program: Command): void {
  const agent = addDaemonOptions(
    program
      .command('agent')
      .description('run the agent: join a service, own partitions, run one child process per partition')
      .option('--config <file>', 'the agent file (YAML or JSON)', 'agent.yaml')
      .option(
        '--ui',
        "serve the read-only dashboard (docs/ui.md) on the API address, at / (the file's `ui: true`)",
      ),
  ).action(async (opts: DaemonFlags & { config: string; ui?: boolean }, cmd: Command) => {
    // The file's log.level and api.* hold unless a flag (or MUSTER_LOG_LEVEL) says otherwise.
    const given = (name: string): boolean => {
      const source = cmd.getOptionValueSource(name);
      return source === 'cli' || source === 'env';
    };
    const { agent: running, daemon } = await runAgent(opts.config, {
      ...(given('logLevel') ? { logLevel: opts.logLevel } : {}),
      ...(given('admin') ? { adminListen: opts.admin } : {}),
      ...(given('adminTokenFile') && opts.adminTokenFile !== undefined
        ? { adminTokenFile: opts.adminTokenFile }
        : {}),
      ...(given('shutdownTimeout') ? { shutdownTimeout: opts.shutdownTimeout } : {}),
      ...(opts.ui === true ? { ui: true } : {}),
    });
    if (running.config.ui)
      process.stdout.write(`muster agent: dashboard on ${daemon.ctx.admin.url}/ (read-only)\n`);
    process.exitCode = await daemon.done;
  });
  agent
    .command('reload')
    .description('re-read the agent file: restart only the children whose settings changed (like SIGHUP)')
    .addOption(jsonOption())
    .action(async (opts: { json?: boolean }, cmd: Command) => {
      // `--config` belongs to `muster agent` (commander gives it to the parent).
      const config = loadAgentConfig((cmd.parent?.opts() as { config: string }).config);
      const res = await callAgent(agentRunFile(config), 'POST', '/v1/reload', config.api.tokenFile);
      if (opts.json) printJson(res);
      else {
        const restarted = (res as { restarted: string[] }).restarted;
        process.stdout.write(
          restarted.length === 0
            ? 'reloaded; no child changed\n'
            : `reloaded; restarted ${restarted.join(', ')}\n`,
        );
      }
    });
  agent
    .command('schema')
    .description('print the JSON Schema of the agent file')
    .action(() => printJson(AGENT_CONFIG_SCHEMA));

  program
    .command('status')
    .description(
      'instances of a service (or of every service) with their partitions, child pids, readiness, restarts and checks',
    )
    .option('--service <name>', 'only this service')
    .option('--root <prefix>', 'key root', DEFAULT_ROOT)
    .option('--watch', 'redraw every second until interrupted')
    .addOption(storeOption())
    .addOption(jsonOption())
    .action(
      async (opts: { service?: string; root: string; watch?: boolean; store: string; json?: boolean }) => {
        const store = await openStore(opts.store);
        try {
          for (;;) {
            const status = await readStatus(store, opts.root, opts.service);
            if (opts.json) printJson(status);
            else {
              if (opts.watch) process.stdout.write('\x1b[2J\x1b[H');
              printStatus(status);
            }
            if (!opts.watch) return;
            await new Promise((r) => setTimeout(r, 1000));
          }
        } finally {
          await store.close();
        }
      },
    );
}

async function callAgent(runFile: string, method: string, path: string, tokenFile: string): Promise<unknown> {
  let api: string;
  try {
    api = (JSON.parse(readFileSync(runFile, 'utf8')) as { api: string }).api;
  } catch {
    throw new MusterError(
      'MUSTER_NOT_FOUND',
      `no running agent found (no ${runFile}); is it running with this file?`,
    );
  }
  const token = readFileSync(tokenFile, 'utf8').trim();
  let res: Response;
  try {
    res = await fetch(`${api}${path}`, { method, headers: { authorization: `Bearer ${token}` } });
  } catch (err) {
    throw new MusterError('MUSTER_UNAVAILABLE', `the agent at ${api} does not answer: ${String(err)}`);
  }
  const body = (await res.json()) as { error?: { code: string; message: string } };
  if (!res.ok) {
    const code = (body.error?.code ?? 'MUSTER_INTERNAL') as ConstructorParameters<typeof MusterError>[0];
    throw new MusterError(code, body.error?.message ?? `HTTP ${res.status}`);
  }
  return body;
}

/** One service's status: the partition table and each agent's record. */
export interface ServiceStatus {
  readonly service: string;
  readonly instances: readonly { id: string; state: string; health: string; owned: number }[];
  readonly agents: readonly AgentRecord[];
  readonly unowned: readonly string[];
}

async function readStatus(store: Store, root: string, service?: string): Promise<ServiceStatus[]> {
  let services: string[];
  if (service !== undefined) services = [service];
  else {
    const prefix = `${root.endsWith('/') ? root : `${root}/`}services/`;
    const r = await store.range({ prefix }, { keysOnly: true });
    services = [...new Set(r.kvs.map((kv) => kv.key.slice(prefix.length).split('/')[0] ?? ''))]
      .filter(Boolean)
      .sort();
  }
  const out: ServiceStatus[] = [];
  for (const s of services) {
    const st = await readPartitionStatus(store, s, { root });
    const agents = await store.range({ prefix: serviceKeys(root, s).agents });
    out.push({
      service: s,
      instances: st.instances.map((i) => ({ id: i.id, state: i.state, health: i.health, owned: i.owned })),
      agents: agents.kvs.map((kv) => jsonOf<AgentRecord>(kv.value, kv.key)),
      unowned: st.partitions.filter((p) => p.owner === null).map((p) => p.partition),
    });
  }
  return out;
}

function printStatus(services: readonly ServiceStatus[]): void {
  const now = Date.now();
  for (const s of services) {
    process.stdout.write(
      `service ${s.service}: ${s.instances.length} instances, ${s.unowned.length} partitions unowned\n`,
    );
    const rows: string[][] = [];
    for (const i of s.instances) {
      const rec = s.agents.find((a) => a.instance === i.id);
      const parts = Object.entries(rec?.partitions ?? {});
      if (parts.length === 0) rows.push([i.id, `${i.state}/${i.health}`, '-', '-', '-', '-', '-', '-', '']);
      for (const [p, r] of parts) {
        const up = r.startedAt === null ? '-' : formatDuration(Math.max(0, now - Date.parse(r.startedAt)));
        rows.push([
          i.id,
          `${i.state}/${i.health}`,
          p,
          r.state,
          r.pid === null ? '-' : String(r.pid),
          String(r.token),
          String(r.restarts),
          up,
          [
            ...Object.entries(r.checks).map(([c, v]) => `${c}=${v}`),
            ...(r.error ? [`${r.error.code}`] : []),
          ].join(' '),
        ]);
      }
      for (const [p, h] of Object.entries(rec?.handedOff ?? {})) {
        rows.push([i.id, '', p, 'handed-off', '-', '-', '-', '-', `to ${h.to || '(nobody)'}: ${h.reason}`]);
      }
    }
    printTable(
      ['INSTANCE', 'STATE', 'PARTITION', 'CHILD', 'PID', 'TOKEN', 'RESTARTS', 'UP', 'CHECKS/ERROR'],
      rows,
    );
  }
}
