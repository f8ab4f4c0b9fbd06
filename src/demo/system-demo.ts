/**
 * `muster demo` (the whole system): `muster serve --ui` on a temporary data directory, three
 * `muster agent` processes running one backend child per partition, a `muster proxy` routing by the
 * `x-key` header, then five narrated steps (docs/demo.md). Every process is spawned through the
 * process kernel, so nothing outlives the demo, even on its SIGKILL.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initConfig, publishConfig } from '../config/index.js';
import { MusterError, throwIfAborted } from '../errors.js';
import { type ProcessHandle, spawnProcess } from '../process/index.js';
import { openStore } from '../store/index.js';
import { pause } from '../util/abort.js';
import { freePort } from '../util/net.js';

export interface SystemDemoStep {
  readonly step: string;
  readonly ok: boolean;
  readonly detail: Record<string, unknown>;
}
export interface SystemDemoResult {
  readonly ok: boolean;
  readonly dashboard: string;
  readonly steps: SystemDemoStep[];
  readonly failedGets: number;
  readonly pids: number[];
}
export interface SystemDemoOptions {
  readonly agents?: number;
  readonly partitions?: number;
  /** Narration; default: nothing. */
  readonly log?: (line: string) => void;
  readonly signal: AbortSignal;
}

/** 2 s: short, so a killed agent's partitions move within seconds (docs/demo.md). */
const DEMO_TTL = '2s';
const SERVICE = 'demo';
const CONFIG = 'demo';
const BIN = new URL('../../../bin/muster.js', import.meta.url).pathname;
const BACKEND = new URL('./system-backend.js', import.meta.url).pathname;

/** Waits `ms`; rejects with `MUSTER_ABORTED` when the demo is interrupted first. */
async function sleep(ms: number, signal: AbortSignal): Promise<void> {
  await pause(ms, signal);
  if (signal.aborted) throw new MusterError('MUSTER_ABORTED', 'the demo was interrupted');
}

async function waitUntil(
  what: string,
  timeoutMs: number,
  signal: AbortSignal,
  check: () => Promise<boolean> | boolean,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    throwIfAborted(signal);
    if (await check()) return;
    if (Date.now() > deadline)
      throw new MusterError('MUSTER_TIMEOUT', `the demo waited ${timeoutMs} ms for ${what}`);
    await sleep(100, signal);
  }
}

interface Answer {
  partition: string;
  token: string;
  pid: number;
  configStatus: number;
  config: { version?: number; value?: unknown; error?: { code?: string } };
  lastSwitch?: { version: number; at: number };
}

async function fetchJson(
  url: string,
  init: RequestInit & { timeoutMs?: number } = {},
): Promise<{ status: number; body: unknown }> {
  const res = await fetch(url, { ...init, signal: AbortSignal.timeout(init.timeoutMs ?? 15_000) });
  const text = await res.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    // text
  }
  return { status: res.status, body };
}

/** Whether `pid` runs (a zombie waiting to be reaped counts as gone). */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  }
}

export async function runSystemDemo(options: SystemDemoOptions): Promise<SystemDemoResult> {
  const { signal } = options;
  const say = options.log ?? (() => {});
  const agentCount = options.agents ?? 3;
  const partitionCount = options.partitions ?? 8;
  const dir = mkdtempSync(join(tmpdir(), 'muster-demo-'));
  const handles: ProcessHandle[] = [];
  const pids: number[] = [];
  const steps: SystemDemoStep[] = [];
  const started = Date.now();
  const t = (): string => `+${((Date.now() - started) / 1000).toFixed(1)}s`;
  let failedGets = 0;
  let store: Awaited<ReturnType<typeof openStore>> | undefined;
  let serve: ProcessHandle | undefined;
  let serveStopped = false;
  const spawn = async (label: string, command: string[]): Promise<ProcessHandle> => {
    const h = await spawnProcess({
      command,
      label,
      grace: 5000,
      env: { MUSTER_LOG_LEVEL: 'warn' },
      onLine: (_stream, line) => {
        if (process.env['MUSTER_DEMO_VERBOSE'] === '1') say(`  [${label}] ${line}`);
      },
    });
    handles.push(h);
    pids.push(h.pid);
    return h;
  };
  const record = (step: string, ok: boolean, detail: Record<string, unknown>): void => {
    steps.push({ step, ok, detail });
    say(`  => ${ok ? 'OK' : 'NOT OK'}: ${step}`);
  };
  try {
    // ---- the store and the dashboard --------------------------------------------------------------
    const storePort = await freePort();
    const adminPort = await freePort();
    const storeUrl = `etcd://127.0.0.1:${storePort}`;
    const dashboard = `http://127.0.0.1:${adminPort}/`;
    serve = await spawn('serve', [
      process.execPath,
      BIN,
      'serve',
      '--data-dir',
      join(dir, 'data'),
      '--listen',
      `127.0.0.1:${storePort}`,
      '--ui',
      '--admin',
      `127.0.0.1:${adminPort}`,
    ]);
    say(`muster demo: the whole system on the embedded store (${storeUrl})`);
    say(`dashboard: ${dashboard}   (open it now: partition map, owners, configuration timeline)`);
    await waitUntil('muster serve', 20_000, signal, async () => {
      try {
        return (await fetchJson(`${dashboard}healthz`, { timeoutMs: 1000 })).status === 200;
      } catch {
        return false;
      }
    });
    store = await openStore(storeUrl);
    const policy = await initConfig(store, CONFIG, {});
    const lead = Math.max(policy.minLeadTimeMs, 1000);
    const v1 = await publishConfig(store, CONFIG, { greeting: 'hello' }, { in: lead, note: 'initial' });
    say(
      `[${t()}] configuration '${CONFIG}' v1 ${JSON.stringify(v1.value)}; maxStaleness ${policy.maxStalenessMs} ms`,
    );

    // ---- agents -----------------------------------------------------------------------------------
    const agents: { id: string; handle: ProcessHandle; stateDir: string }[] = [];
    for (let i = 0; i < agentCount; i++) {
      const id = `agent-${i + 1}`;
      const stateDir = join(dir, id);
      const file = join(dir, `${id}.json`);
      writeFileSync(
        file,
        JSON.stringify({
          store: storeUrl,
          service: SERVICE,
          instance: { id },
          session: { ttl: DEMO_TTL },
          partitions: { count: partitionCount },
          run: {
            command: [process.execPath, BACKEND],
            env: { DEMO_CONFIG: CONFIG, DEMO_PORT: '{port}' },
            ready: { fd: 3, timeout: '10s' },
            stop: { signal: 'SIGTERM', grace: '1s' },
            logs: { dir: join(dir, 'logs') },
            restart: { policy: 'always', backoff: { initial: '50ms', max: '1s', resetAfter: '10s' } },
          },
          config: [CONFIG],
          relay: false,
          stateDir,
          log: { level: 'warn' },
        }),
      );
      agents.push({
        id,
        stateDir,
        handle: await spawn(id, [process.execPath, BIN, 'agent', '--config', file]),
      });
    }
    say(`[${t()}] started ${agentCount} agents (session TTL ${DEMO_TTL}) for ${partitionCount} partitions`);

    // ---- the proxy --------------------------------------------------------------------------------
    const proxyPort = await freePort();
    const proxyFile = join(dir, 'proxy.json');
    writeFileSync(
      proxyFile,
      JSON.stringify({
        service: SERVICE,
        store: storeUrl,
        listen: [`127.0.0.1:${proxyPort}`],
        key: 'header:x-key',
        workers: 1,
        hold: { timeout: '20s', probeInterval: '100ms' },
        admin: false,
      }),
    );
    await spawn('proxy', [process.execPath, BIN, 'proxy', '--config', proxyFile]);
    const proxy = `http://127.0.0.1:${proxyPort}/`;
    say(`[${t()}] proxy on ${proxy}, routing by the x-key header`);
    const keys = Array.from({ length: 24 }, (_, i) => `user-${i}`);
    const ask = async (key: string): Promise<Answer | undefined> => {
      try {
        const r = await fetchJson(proxy, { headers: { 'x-key': key } });
        return r.status === 200 ? (r.body as Answer) : undefined;
      } catch {
        return undefined;
      }
    };
    const agentApi = (a: { stateDir: string }): { url: string; token: string } => {
      const run = JSON.parse(readFileSync(join(a.stateDir, `agent-${SERVICE}.json`), 'utf8')) as {
        api?: string;
        admin?: string;
        url?: string;
      };
      const url = run.api ?? run.admin ?? run.url ?? '';
      const token = readFileSync(join(a.stateDir, `${SERVICE}.token`), 'utf8').trim();
      return { url, token };
    };
    const partitionsOf = async (a: {
      stateDir: string;
    }): Promise<Record<string, { pid?: number; token?: unknown; state?: string }>> => {
      const { url, token } = agentApi(a);
      const r = await fetchJson(`${url}/v1/partitions`, { headers: { authorization: `Bearer ${token}` } });
      const body = r.body as { partitions?: unknown };
      const list = body.partitions ?? body;
      const out: Record<string, { pid?: number; token?: unknown; state?: string }> = {};
      if (Array.isArray(list)) {
        for (const p of list as { partition: string; pid?: number; token?: unknown; state?: string }[])
          out[p.partition] = p;
      } else if (typeof list === 'object' && list !== null) {
        Object.assign(out, list);
      }
      return out;
    };

    // ---- step 1: routing --------------------------------------------------------------------------
    say(`\nstep 1: requests by key through the proxy reach the partition owners`);
    say(`  notice: each key always lands on the same partition; the answer names its fencing token`);
    const byKey = new Map<string, Answer>();
    await waitUntil('every key to be answered through the proxy', 30_000, signal, async () => {
      const answers = await Promise.all(keys.map(ask));
      answers.forEach((a, i) => a !== undefined && byKey.set(keys[i]!, a));
      return byKey.size === keys.length;
    });
    const seenPartitions = new Set<string>();
    for (const key of keys.slice(0, 8)) {
      const a = byKey.get(key)!;
      say(
        `  x-key: ${key.padEnd(8)} -> partition ${a.partition.padStart(2)}  token ${a.token}  pid ${a.pid}`,
      );
    }
    for (const a of byKey.values()) seenPartitions.add(a.partition);
    const again = await Promise.all(keys.map(ask));
    const stable = again.every((a, i) => a !== undefined && a.partition === byKey.get(keys[i]!)!.partition);
    record('routing', stable && seenPartitions.size > 1, {
      keys: keys.length,
      partitions: [...seenPartitions].sort(),
      stable,
    });

    // A representative key per partition.
    const keyOf = new Map<string, string>();
    for (const [k, a] of byKey) if (!keyOf.has(a.partition)) keyOf.set(a.partition, k);
    const repKeys = [...keyOf.values()];

    // ---- step 2: scheduled configuration ----------------------------------------------------------
    say(`\nstep 2: a scheduled configuration version switches every child at one instant`);
    const v2 = await publishConfig(store, CONFIG, { greeting: 'bonjour' }, { in: 3000, note: 'demo switch' });
    say(
      `[${t()}] v2 ${JSON.stringify(v2.value)} scheduled for ${new Date(v2.activateAt).toISOString()} (in 3 s)`,
    );
    say(`  notice: before the instant every child answers v1; after it, every child reports the switch`);
    // Before the instant no child may answer another version. A request that got no answer, or a
    // child whose config read was refused (a 503 while its proof is renewed on a loaded machine), is
    // asked again: it proves nothing either way.
    const before = await Promise.all(repKeys.map(ask));
    for (let i = 0; i < before.length; i++) {
      for (
        let tries = 0;
        tries < 5 && before[i]?.configStatus !== 200 && Date.now() < v2.activateAt - 500;
        tries++
      ) {
        await sleep(100, signal);
        before[i] = await ask(repKeys[i]!);
      }
    }
    const answered = before.filter((a) => a?.configStatus === 200);
    const beforeV1 = answered.length > 0 && answered.every((a) => a!.config.version === v1.version);
    await sleep(Math.max(0, v2.activateAt - Date.now()) + 300, signal);
    const switchTimes: number[] = [];
    let afterV2 = false;
    await waitUntil('every child to report v2', 10_000, signal, async () => {
      const after = await Promise.all(repKeys.map(ask));
      afterV2 = after.every((a) => a?.config.version === v2.version && a.lastSwitch?.version === v2.version);
      if (afterV2) {
        switchTimes.length = 0;
        for (const a of after) {
          switchTimes.push(a!.lastSwitch!.at);
          say(
            `  partition ${a!.partition.padStart(2)} switched to v${a!.lastSwitch!.version} at +${a!.lastSwitch!.at - v2.activateAt} ms after the instant`,
          );
        }
      }
      return afterV2;
    });
    const spread = Math.max(...switchTimes) - Math.min(...switchTimes);
    say(`  spread of the switch across ${switchTimes.length} children: ${spread} ms`);
    record('scheduled-config', beforeV1 && afterV2, {
      beforeV1,
      answeredBefore: answered.length,
      afterV2,
      spreadMs: spread,
      version: v2.version,
    });

    // A client loop through the proxy; counts failed GETs.
    const loop = (stop: AbortSignal): Promise<{ ok: number; failed: number }> => {
      const counts = { ok: 0, failed: 0 };
      return (async () => {
        while (!stop.aborted) {
          const answers = await Promise.all(
            repKeys.map(async (k) => {
              try {
                const r = await fetchJson(proxy, { headers: { 'x-key': k }, timeoutMs: 30_000 });
                return r.status === 200;
              } catch {
                return false;
              }
            }),
          );
          for (const ok of answers) {
            if (ok) counts.ok++;
            else counts.failed++;
          }
          await new Promise((r) => setTimeout(r, 50));
        }
        return counts;
      })();
    };

    // ---- step 3: kill -9 of an agent --------------------------------------------------------------
    say(`\nstep 3: kill -9 of an agent while a client loops through the proxy`);
    const victim = agents[0]!;
    const victimParts = await partitionsOf(victim);
    const childPids = Object.values(victimParts)
      .map((p) => p.pid)
      .filter((p): p is number => typeof p === 'number');
    say(
      `  ${victim.id} (pid ${victim.handle.pid}) owns partitions ${Object.keys(victimParts).join(', ') || '(none)'}; children ${childPids.join(', ')}`,
    );
    say(
      `  notice: its children die with it; its partitions move after the ${DEMO_TTL} TTL; no GET fails (held)`,
    );
    const stop3 = new AbortController();
    const loop3 = loop(stop3.signal);
    await sleep(300, signal);
    const killedAt = Date.now();
    process.kill(victim.handle.pid, 'SIGKILL');
    await victim.handle.exited;
    let childrenGoneMs = -1;
    await waitUntil("the killed agent's children to die", 5000, signal, () => {
      if (childPids.some(alive)) return false;
      childrenGoneMs = Date.now() - killedAt;
      return true;
    });
    say(`[${t()}] ${victim.id} killed; its ${childPids.length} children gone ${childrenGoneMs} ms later`);
    const movedParts = Object.keys(victimParts);
    let failoverMs = -1;
    await waitUntil('the partitions to fail over', 20_000, signal, async () => {
      const answers = await Promise.all(repKeys.map(ask));
      const ok = answers.every((a) => a !== undefined && !childPids.includes(a.pid));
      if (ok) failoverMs = Date.now() - killedAt;
      return ok;
    });
    await sleep(500, signal);
    stop3.abort();
    const c3 = await loop3;
    failedGets += c3.failed;
    say(
      `[${t()}] partitions ${movedParts.join(', ') || '(none)'} answered by new owners ${failoverMs} ms after the kill`,
    );
    say(`  client loop: ${c3.ok} GETs answered, ${c3.failed} failed`);
    record('kill-agent', c3.failed === 0 && failoverMs >= 0, {
      childrenGoneMs,
      failoverMs,
      moved: movedParts,
      gets: c3.ok,
      failedGets: c3.failed,
    });

    // ---- step 4: a backend restart ----------------------------------------------------------------
    say(`\nstep 4: a backend restart, papered over by held requests`);
    const target = agents[1]!;
    const parts = await partitionsOf(target);
    const p = Object.keys(parts)[0];
    if (p === undefined) throw new MusterError('MUSTER_INTERNAL', `${target.id} owns no partition`);
    const oldPid = parts[p]!.pid;
    say(`  notice: partition ${p}'s child (pid ${oldPid}) restarts; requests for it wait, none fails`);
    const stop4 = new AbortController();
    const loop4 = loop(stop4.signal);
    await sleep(300, signal);
    const { url, token } = agentApi(target);
    const r = await fetchJson(`${url}/v1/partitions/${p}/restart`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}` },
    });
    let newPid = -1;
    await waitUntil(`partition ${p} to run again`, 15_000, signal, async () => {
      const now = (await partitionsOf(target))[p];
      if (now?.pid !== undefined && now.pid !== oldPid && now.state === 'ready') newPid = now.pid;
      return newPid > 0;
    });
    await sleep(500, signal);
    stop4.abort();
    const c4 = await loop4;
    failedGets += c4.failed;
    say(
      `[${t()}] restart answered ${r.status}; partition ${p} now pid ${newPid}; client loop: ${c4.ok} answered, ${c4.failed} failed`,
    );
    record('restart-backend', r.status === 200 && c4.failed === 0, {
      partition: p,
      oldPid,
      newPid,
      gets: c4.ok,
      failedGets: c4.failed,
    });

    // ---- step 5: the store paused -----------------------------------------------------------------
    say(`\nstep 5: the store paused (SIGSTOP of muster serve): configuration reads fail closed`);
    say(
      `  notice: after maxStaleness the agent answers 503 MUSTER_STALE_CONFIG; nobody runs on a stale version`,
    );
    const probe = async (): Promise<{ status: number; code?: string }> => {
      try {
        const res = await fetchJson(`${url}/v1/config/${CONFIG}`, {
          headers: { authorization: `Bearer ${token}` },
          timeoutMs: 3000,
        });
        const code = (res.body as { error?: { code?: string } }).error?.code;
        return code === undefined ? { status: res.status } : { status: res.status, code };
      } catch (err) {
        return { status: 0, code: String(err) };
      }
    };
    const pausedAt = Date.now();
    process.kill(serve.pid, 'SIGSTOP');
    serveStopped = true;
    let stale: { status: number; code?: string } = { status: 0 };
    await waitUntil('config reads to fail closed', policy.maxStalenessMs + 8000, signal, async () => {
      stale = await probe();
      return stale.code === 'MUSTER_STALE_CONFIG';
    });
    const failClosedMs = Date.now() - pausedAt;
    say(
      `[${t()}] ${failClosedMs} ms after the pause: GET /v1/config/${CONFIG} -> ${stale.status} ${stale.code ?? ''}`,
    );
    process.kill(serve.pid, 'SIGCONT');
    serveStopped = false;
    const resumedAt = Date.now();
    let fresh: { status: number; code?: string } = { status: 0 };
    await waitUntil('config reads to succeed again', 20_000, signal, async () => {
      fresh = await probe();
      return fresh.status === 200;
    });
    say(
      `[${t()}] store resumed; config reads answer ${fresh.status} again ${Date.now() - resumedAt} ms later`,
    );
    await waitUntil('every key to be answered again', 30_000, signal, async () =>
      (await Promise.all(repKeys.map(ask))).every((a) => a !== undefined),
    );
    say(`[${t()}] every partition answers through the proxy again`);
    record('store-paused', stale.code === 'MUSTER_STALE_CONFIG' && fresh.status === 200, {
      failClosedMs,
      staleStatus: stale.status,
      staleCode: stale.code,
    });

    const ok = steps.every((s) => s.ok) && failedGets === 0;
    say(
      `\nmuster demo: ${ok ? 'every step OK' : 'some steps NOT OK'}; ${failedGets} failed GETs; cleaning up`,
    );
    return { ok, dashboard, steps, failedGets, pids };
  } finally {
    if (serve !== undefined && serveStopped) {
      try {
        process.kill(serve.pid, 'SIGCONT');
      } catch {
        // gone
      }
    }
    // Stop in reverse order: proxy, agents (they stop their children), then the store.
    for (const h of [...handles].reverse()) {
      try {
        await h.stop({ grace: 5000 });
      } catch {
        await h.kill().catch(() => {});
      }
    }
    await store?.close().catch(() => {});
    if (process.env['MUSTER_DEMO_KEEP'] !== '1') rmSync(dir, { recursive: true, force: true });
    else say(`kept ${dir}`);
  }
}
