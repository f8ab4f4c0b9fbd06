/** Shared pieces of the agent tests: temp dirs, agent files, API calls. */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { parseAgentConfig, type PartitionRow, runAgent, type RunningAgent } from '../../src/agent/index.js';
import { openMemoryStore } from '../../src/store/index.js';
import type { Store } from '../../src/store/types.js';

/** What the agent's API answers, loosely typed for tests. */
export interface ApiJson {
  readonly partitions: PartitionRow[];
  readonly error: { code: string; message: string };
  readonly [field: string]: unknown;
}
export interface ApiResult {
  readonly status: number;
  readonly json: ApiJson;
}

export function tempDir(prefix = 'agent-test-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

/** A quiet logger (set MUSTER_TEST_LOG=debug to see the agent's log). */
export function testLogger(): pino.Logger {
  return pino({ level: process.env.MUSTER_TEST_LOG ?? 'silent' }, pino.destination(2));
}

/** Writes `yaml` to `<dir>/agent.yaml` and starts an agent on `store`. */
export async function startAgent(
  dir: string,
  yaml: string,
  store?: Store,
  file = 'agent.yaml',
): Promise<RunningAgent> {
  const path = join(dir, file);
  writeFileSync(path, yaml);
  return runAgent(path, {
    config: parseAgentConfig(yaml, path),
    ...(store ? { store } : {}),
    logger: testLogger(),
    handleSignals: false,
  });
}

/**
 * The ground of one in-process agent test: a temp dir, a memory store, and the agents started on
 * that store. {@link withAgents} closes it: every agent stopped (graceful leave), then the store.
 */
export interface AgentFixture {
  readonly dir: string;
  readonly store: Store;
  /** Writes `yaml` to `<dir>/<file>` and starts an agent on the fixture's store. */
  readonly start: (yaml: string, file?: string) => Promise<RunningAgent>;
}

/** Runs `body` with a fresh {@link AgentFixture}; stops its agents and closes its store whatever happens. */
export async function withAgents(body: (f: AgentFixture) => Promise<void>): Promise<void> {
  const dir = tempDir();
  const store = openMemoryStore();
  const agents: RunningAgent[] = [];
  try {
    await body({
      dir,
      store,
      async start(yaml, file = 'agent.yaml') {
        const running = await startAgent(dir, yaml, store, file);
        agents.push(running);
        return running;
      },
    });
  } finally {
    for (const a of agents) await a.daemon.stop();
    await store.close();
  }
}

/** Calls the agent's API with its token. */
export async function api(
  running: RunningAgent,
  method: string,
  path: string,
  body?: string,
): Promise<ApiResult> {
  const token = readFileSync(running.agent.config.api.tokenFile, 'utf8').trim();
  const res = await fetch(`${running.daemon.ctx.admin.url}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}` },
    ...(body !== undefined ? { body } : {}),
  });
  const text = await res.text();
  let json: unknown = text;
  try {
    json = text ? JSON.parse(text) : {};
  } catch {
    // not JSON (/metrics)
  }
  return { status: res.status, json: json as ApiJson };
}

/** True while any process of group `pgid` exists. */
export function groupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch {
    return false;
  }
}

/** True while `pid` exists (and is not a zombie). */
export function pidAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

export function lines(path: string): string[] {
  try {
    return readFileSync(path, 'utf8').split('\n').filter(Boolean);
  } catch {
    return [];
  }
}

/** The repository root (tests run from dist/test/agent). */
export const REPO = new URL('../../../', import.meta.url).pathname;
export const FIXTURES = `${REPO}test/agent/fixtures/`;
export const DIST_FIXTURES = `${REPO}dist/test/agent/fixtures/`;

/** An agent in its own process (`muster agent --config`), with its stderr log collected. */
export interface AgentProcess {
  readonly child: import('node:child_process').ChildProcess;
  readonly log: string[];
  /** Resolves with the exit code (or signal). */
  readonly exited: Promise<number | string>;
  /** The API address once the agent has written its run file. */
  api(): Promise<string>;
  call(method: string, path: string): Promise<ApiResult>;
  /** `GET /v1/partitions`. */
  partitions(): Promise<PartitionRow[]>;
}

export function spawnAgent(dir: string, yaml: string, name = 'agent.yaml'): AgentProcess {
  const path = join(dir, name);
  writeFileSync(path, yaml);
  const child = spawn(
    process.execPath,
    [`${REPO}bin/muster.js`, 'agent', '--config', path, '--log-level', 'debug'],
    {
      stdio: ['ignore', 'ignore', 'pipe'],
    },
  );
  const log: string[] = [];
  let buf = '';
  child.stderr?.on('data', (c: Buffer) => {
    buf += c.toString('utf8');
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      log.push(buf.slice(0, i));
      buf = buf.slice(i + 1);
    }
  });
  const exited = new Promise<number | string>((resolve) =>
    child.once('exit', (code, signal) => resolve(code ?? signal ?? -1)),
  );
  const config = parseAgentConfig(yaml, path);
  const api = async (): Promise<string> => {
    for (let i = 0; i < 500; i++) {
      try {
        const run = JSON.parse(
          readFileSync(join(config.stateDir, `agent-${config.service}.json`), 'utf8'),
        ) as {
          api: string;
          pid: number;
        };
        if (run.pid === child.pid) return run.api;
      } catch {
        // not yet
      }
      if (child.exitCode !== null) throw new Error(`agent exited:\n${log.join('\n')}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    throw new Error(`agent did not start:\n${log.join('\n')}`);
  };
  return {
    child,
    log,
    exited,
    api,
    async call(method, p) {
      const url = await api();
      const token = readFileSync(config.api.tokenFile, 'utf8').trim();
      const res = await fetch(`${url}${p}`, { method, headers: { authorization: `Bearer ${token}` } });
      return { status: res.status, json: (await res.json()) as ApiJson };
    },
    async partitions() {
      return (await this.call('GET', '/v1/partitions')).json.partitions;
    },
  };
}
