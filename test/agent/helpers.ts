/** Shared pieces of the agent tests: temp dirs, agent files, API calls. */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { parseAgentConfig, runAgent, type RunningAgent } from '../../src/agent/index.js';
import type { Store } from '../../src/store/types.js';

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

/** Calls the agent's API with its token. */
export async function api(
  running: RunningAgent,
  method: string,
  path: string,
  body?: string,
): Promise<{ status: number; json: any }> {
  const token = readFileSync(running.agent.config.api.tokenFile, 'utf8').trim();
  const res = await fetch(`${running.daemon.ctx.admin.url}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}` },
    ...(body !== undefined ? { body } : {}),
  });
  const text = await res.text();
  let json: any;
  try {
    json = JSON.parse(text);
  } catch {
    json = text;
  }
  return { status: res.status, json };
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
