/**
 * `muster agent`: the agent inside the daemon runtime. Signals (SIGTERM/SIGINT graceful leave, a
 * second one forces; SIGHUP reload) are the runtime's; the agent provides `stop`, `status`, `reload`.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Logger } from 'pino';
import { onAbort } from '../util/abort.js';
import { readTokenFile } from '../util/token.js';
import type { Store } from '../store/index.js';
import { isLoopback, parseHostPort } from '../util/net.js';
import type { Duration } from '../util/duration.js';
import { Agent } from './agent.js';
import { addAgentRoutes } from './api.js';
import { loadAgentConfig, type AgentConfig } from './config.js';
import { type Daemon, runDaemon } from './runtime.js';

export interface RunAgentOptions {
  /** A parsed configuration instead of reading `file`. */
  config?: AgentConfig;
  /** A store to use instead of opening `config.store` (tests); not closed by the agent. */
  store?: Store;
  logger?: Logger;
  logLevel?: string;
  /** Overrides `api.listen` (`muster agent --admin`). */
  adminListen?: string;
  /** Overrides `api.tokenFile` (`muster agent --admin-token-file`). */
  adminTokenFile?: string;
  /** Overrides the graceful-stop deadline (default: `run.stop.grace` + 10 s). */
  shutdownTimeout?: Duration;
  /** Overrides the file's `ui` (`muster agent --ui`): serve the read-only dashboard on the API address. */
  ui?: boolean;
  /** Default true; tests pass false and call `daemon.stop()`. */
  handleSignals?: boolean;
}

/**
 * The API token: the first line of `file`, created (0600, in a 0700 directory) with 32 random bytes
 * when the file does not exist. Children get it as `MUSTER_API_TOKEN`.
 */
export function ensureTokenFile(file: string): string {
  if (!existsSync(file)) {
    mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
    try {
      writeFileSync(file, `${randomBytes(32).toString('hex')}\n`, { mode: 0o600, flag: 'wx' });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err; // another agent won the race
    }
  }
  return readTokenFile(file, 'api.tokenFile');
}

/** A running agent and its daemon. */
export interface RunningAgent {
  readonly agent: Agent;
  readonly daemon: Daemon;
}

/**
 * Reads `file` (throws `MUSTER_AGENT_CONFIG` before anything starts), then runs the agent until a
 * signal or `daemon.stop()`. Throws the store's errors and `MUSTER_DUPLICATE_INSTANCE` from start-up.
 */
export async function runAgent(file: string, options: RunAgentOptions = {}): Promise<RunningAgent> {
  const loaded = options.config ?? loadAgentConfig(file);
  const config: AgentConfig = {
    ...loaded,
    api: {
      listen: options.adminListen ?? loaded.api.listen,
      tokenFile: options.adminTokenFile ?? loaded.api.tokenFile,
    },
    ui: options.ui ?? loaded.ui,
  };
  const token = ensureTokenFile(config.api.tokenFile);
  let agent: Agent | undefined;
  const daemon = await runDaemon(
    {
      name: 'agent',
      ...(options.logger ? { logger: options.logger } : {}),
      ...((options.logLevel ?? config.logLevel) ? { logLevel: options.logLevel ?? config.logLevel } : {}),
      admin: { listen: config.api.listen, tokenFile: config.api.tokenFile },
      shutdownTimeout: options.shutdownTimeout ?? config.run.graceMs + 10_000,
      handleSignals: options.handleSignals ?? true,
    },
    async (ctx) => {
      const a = await Agent.start(ctx, config, { token, ...(options.store ? { store: options.store } : {}) });
      agent = a;
      addAgentRoutes(a);
      // The dashboard, mounted as `muster serve --ui` mounts it. The agent's API always has a token, which
      // a browser cannot send: on loopback the read side is served without it; writes keep the token and
      // stay refused (no write token). Off loopback every route, the dashboard's too, needs the token.
      // Loaded only when asked for: the dashboard's modules cost an agent that does not serve it RSS.
      const ui = config.ui
        ? (await import('../ui/index.js')).mountUi(ctx.admin, {
            store: a.store,
            ...(config.root !== undefined ? { root: config.root } : {}),
            openReads: isLoopback(parseHostPort(config.api.listen, 'api.listen').host),
          })
        : undefined;
      if (ui !== undefined) await ui.model.ready();
      ctx.log.info(
        { service: config.service, instance: a.id, api: ctx.admin.url, relay: a.relayAddress },
        'agent running',
      );
      return {
        stop: async (force) => {
          // Forced (second signal, shutdown deadline): SIGKILL every child group now; the leave goes on.
          onAbort(force, () => void a.killChildren());
          ui?.close();
          await a.close();
        },
        status: () => a.status(),
        reload: () => a.reload(),
      };
    },
  );
  return { agent: agent as Agent, daemon };
}
