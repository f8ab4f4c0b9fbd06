/**
 * `npm run bench -- proxy [--duration 8s] [--connections 50] [--changes 200] [--only-changes] [--rate 5000] [--rounds 5] [--workers 1] [--vcpu-gaps] [--fixed-order]`: `muster proxy` side by
 * side with nginx (`hash $http_x_key consistent`, upstream keep-alive) and node `http-proxy` (keep-alive
 * agent), one worker each (`--workers`), in front of the same nginx `return 200` backend, under the same load
 * (`wrk -t1 -cC -dD --latency`, one routing key in an `X-Key` header). Prints requests/s and latency
 * p50/p99 per path, with the direct path to the backend as the ceiling. Then each path at a fixed
 * rate (`--rate`, 5,000 req/s; bench/proxy-rate.ts, wrk2's constant arrival rate): p50/p99/p99.9 and
 * the p99 added over the direct path; then the same rate sent by h2load (`h2loadRate`), `--rounds`
 * rounds (5) alternating the paths — the proxies' order rotating from round to round, each row with
 * the CPU the other proxies used meanwhile (`--fixed-order`: nginx, http-proxy, muster in every
 * round, as before session 13) — with the median of each round's added p99. `--workers N` gives each
 * proxy N workers (muster's `workers`, nginx's `worker_processes` under its master, http-proxy N
 * processes under `node:cluster`; the backend keeps one). `--vcpu-gaps` runs each h2load round under `perf record -a` and reports the stretches
 * in which the host did not run one of this machine's vCPUs, how many of the slow requests overlap
 * one, and the p99 of the requests that overlap none (bench/vcpu-gaps.ts): a diagnosis of the tail.
 *
 * Then the route change → first request routed by it: a client sends requests back to back through
 * `muster proxy` while the benchmark pins the key to the other of two backends (`route pin`, one store
 * write to a `muster serve` started here); the figure is the time from just before the write is sent
 * to the first response from the new backend (so it includes the store's commit, fsync and watch
 * delivery). Beside it, the floor: the same write seen by a watch in this process. 200 changes by
 * default (`--changes`): with 20, p99 was the single slowest sample. `--only-changes` skips the load
 * rows.
 *
 * First of all, the idle cost: the CPU time of muster's master and workers (every thread, from
 * `/proc/<pid>/task/<tid>/schedstat`) over `--idle` (20 s, after 20 s to settle — the memory reducer collects some 15 s after start; `--idle 0` skips it)
 * with no client connected. `--only-idle` stops there; `--bin PATH` runs another build's
 * `bin/muster.js` (an A/B: a worktree of an older commit).
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { Agent, request } from 'undici';
import { openStore, type Store } from '../src/store/index.js';
import { findBinary, freePort, startTempServe } from '../src/testing/index.js';
import { toMillis } from '../src/util/duration.js';
import { descendants, threadCpuNs } from './agent.js';
import { arg, fmt, latencySummary, median, quantile } from './stats.js';
import { gapMsWithin, perfRecordArgs, readVcpuGaps, vcpuGapsPerf } from './vcpu-gaps.js';

export const BIN = fileURLToPath(new URL('../../bin/muster.js', import.meta.url));
const PEER = fileURLToPath(new URL('./proxy-peer.js', import.meta.url));
const RATE = fileURLToPath(new URL('./proxy-rate.js', import.meta.url));

/**
 * Runs a load generator to its end without blocking this process: the benchmark's `muster serve`
 * runs in this process, and a `spawnSync` froze it for the whole run (the proxy's store session and
 * held-queue publisher then timed out mid-measurement and retried).
 */
async function runTool(bin: string, argv: readonly string[]): Promise<{ status: number; stdout: string }> {
  try {
    const { stdout } = await promisify(execFile)(bin, argv, {
      encoding: 'utf8',
      maxBuffer: 64 * 1024 * 1024,
    });
    return { status: 0, stdout };
  } catch (err) {
    const e = err as { code?: unknown; stdout?: string };
    return { status: typeof e.code === 'number' ? e.code : 1, stdout: e.stdout ?? '' };
  }
}

interface RateResult {
  readonly ok: number;
  readonly errors: number;
  readonly p50: number;
  readonly p99: number;
  readonly p999: number;
}

/**
 * `rate` requests/s for `seconds` (after one unmeasured second) sent by h2load (nghttp2's load
 * generator, in C: 13 % of a core at 5k/s here against the Node generator's 33 %), HTTP/1.1 over `connections`
 * connections each sending `rate / connections` requests/s, the connections opened one per
 * millisecond so their sends are spread over each period instead of arriving together. Latency is from
 * each request's send (h2load's `--log-file`), not from a due time. h2load sends a connection's next
 * request when its timer fires, or — if the previous request on that connection is still out — when
 * that one ends, and times it from then (coordinated omission). A send can only be deferred after
 * some request took longer than a connection's period (`connections / rate`: 10 ms at 5k/s over 50),
 * so `over`, the count of such requests, is printed: when it is 0, every request left on time.
 */
export async function h2loadRate(
  bin: string,
  url: string,
  rate: number,
  seconds: number,
  connections: number,
  log: string,
  perf?: string,
): Promise<RateResult & { readonly over: number; readonly gaps?: GapSummary }> {
  const warm = rate;
  const total = warm + rate * seconds;
  const argv = [
    '--h1',
    '-n',
    String(total),
    '-c',
    String(connections),
    '-r',
    '1',
    '--rate-period',
    '1ms',
    '--rps',
    String(rate / connections),
    '--log-file',
    log,
    '-H',
    'x-key: realm1',
    url,
  ];
  const perfOut = `${log}.perf`;
  const r =
    perf === undefined
      ? await runTool(bin, argv)
      : await runTool(perf, perfRecordArgs(perfOut, [bin, ...argv]));
  const failed = {
    ok: 0,
    errors: Number.NaN,
    p50: Number.NaN,
    p99: Number.NaN,
    p999: Number.NaN,
    over: Number.NaN,
  };
  if (r.status !== 0) return failed;
  const rows = readFileSync(log, 'utf8')
    .trim()
    .split('\n')
    .map((line) => line.split('\t').map(Number) as [number, number, number])
    .sort((a, b) => a[0] - b[0])
    .slice(warm);
  rmSync(log, { force: true });
  const ms = rows.map((row) => row[2] / 1000);
  const period = (connections / rate) * 1000;
  const ok = rows.filter((row) => row[1] === 200).length;
  let gaps: GapSummary | undefined;
  if (perf !== undefined) {
    const found = (await readVcpuGaps(perf, perfOut)).filter((g) => g.end >= (rows[0]?.[0] ?? 0));
    rmSync(perfOut, { force: true });
    const hit = rows.map((row) => gapMsWithin(found, row[0], row[0] + row[2]) > 0);
    const outside = ms.filter((_, i) => !hit[i]);
    gaps = {
      count: found.length,
      longestMs: found.reduce((m, g) => Math.max(m, (g.end - g.start) / 1000), 0),
      overInGap: ms.filter((v, i) => v > period && hit[i]).length,
      p99Outside: quantile(outside, 0.99),
    };
  }
  return {
    ok,
    errors: total - warm - ok,
    p50: quantile(ms, 0.5),
    p99: quantile(ms, 0.99),
    p999: quantile(ms, 0.999),
    over: ms.filter((v) => v > period).length,
    gaps,
  };
}

/** What `--vcpu-gaps` found during one h2load run (bench/vcpu-gaps.ts). */
interface GapSummary {
  /** Stretches of ≥ 5 ms without a sample on a CPU: the vCPU was not running. */
  readonly count: number;
  readonly longestMs: number;
  /** Requests over a connection's period (the `>10 ms` count) whose send → response overlaps a gap. */
  readonly overInGap: number;
  /** p99 of the requests that overlap no gap. */
  readonly p99Outside: number;
}

/** `RATE` requests/s for `seconds` from the constant-arrival-rate generator (its own process). */
async function fixedRate(
  url: string,
  rate: number,
  seconds: number,
  connections: number,
): Promise<RateResult> {
  const r = await runTool(process.execPath, [RATE, url, String(rate), String(seconds), String(connections)]);
  const line = (r.stdout ?? '').trim().split('\n').at(-1) ?? '';
  try {
    return JSON.parse(line) as RateResult;
  } catch {
    return { ok: 0, errors: Number.NaN, p50: Number.NaN, p99: Number.NaN, p999: Number.NaN };
  }
}

interface WrkResult {
  readonly rps: number;
  readonly p50: string;
  readonly p99: string;
  readonly errors: string;
}

async function wrk(url: string, connections: number, seconds: number): Promise<WrkResult> {
  const r = await runTool('wrk', [
    '-t1',
    `-c${connections}`,
    `-d${seconds}s`,
    '--latency',
    '-H',
    'X-Key: realm1',
    url,
  ]);
  const out = r.stdout;
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? 'NaN');
  const p50 = /\s50%\s+(\S+)/.exec(out)?.[1] ?? '?';
  const p99 = /\s99%\s+(\S+)/.exec(out)?.[1] ?? '?';
  const errs = /Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)/.exec(out);
  return { rps, p50, p99, errors: errs === null ? '0' : errs[0] };
}

function nginxConfig(prefix: string, body: string, workers: number): string {
  // one worker runs without a master (nothing between it and the bench); more need nginx's master,
  // whose workers would switch to `nobody` under root (unlike the one worker): keep them as the bench
  const user = workers > 1 && process.getuid?.() === 0 ? 'user root;\n' : '';
  return `daemon off;\n${user}master_process ${workers > 1 ? 'on' : 'off'};\nworker_processes ${workers};\npid ${prefix}/nginx.pid;\nerror_log ${prefix}/error.log warn;\nevents { worker_connections 4096; }\nhttp {\n  access_log off;\n  keepalive_requests 1000000;\n  client_body_temp_path ${prefix}/tmp;\n  proxy_temp_path ${prefix}/tmp;\n  fastcgi_temp_path ${prefix}/tmp;\n  uwsgi_temp_path ${prefix}/tmp;\n  scgi_temp_path ${prefix}/tmp;\n${body}\n}\n`;
}

export async function startNginx(
  dir: string,
  name: string,
  body: string,
  workers = 1,
): Promise<ChildProcess> {
  const prefix = join(dir, name);
  mkdirSync(join(prefix, 'tmp'), { recursive: true });
  const conf = join(prefix, 'nginx.conf');
  writeFileSync(conf, nginxConfig(prefix, body, workers));
  const nginx = findBinary('nginx') ?? '/usr/sbin/nginx';
  const child = spawn(nginx, ['-p', prefix, '-c', conf], { stdio: ['ignore', 'ignore', 'inherit'] });
  await new Promise((r) => setTimeout(r, 300));
  if (child.exitCode !== null) throw new Error(`nginx ${name} exited (${child.exitCode})`);
  return child;
}

export async function firstLine(child: ChildProcess): Promise<string> {
  return new Promise((resolve, reject) => {
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).once('line', resolve);
    child.once('exit', (code) => reject(new Error(`exited with ${code}`)));
  });
}

export async function run(args: string[]): Promise<void> {
  const seconds = Math.max(1, Math.round(toMillis(arg(args, '--duration') ?? '8s') / 1000));
  const connections = Number(arg(args, '--connections') ?? 50);
  const changes = Number(arg(args, '--changes') ?? 200);
  const fixed = Number(arg(args, '--rate') ?? 5000);
  const workers = Number(arg(args, '--workers') ?? 1);
  const idleMs = toMillis(arg(args, '--idle') ?? '20s');
  const bin = arg(args, '--bin') ?? BIN;
  const dir = mkdtempSync(join(tmpdir(), 'muster-bench-proxy-'));
  const children: ChildProcess[] = [];
  const serve = await startTempServe();
  const store = await openStore(serve.url);
  try {
    const [b1, b2, ngx, peer] = [await freePort(), await freePort(), await freePort(), await freePort()];
    children.push(
      await startNginx(
        dir,
        'backends',
        `  server { listen 127.0.0.1:${b1}; location / { return 200 "a"; } }\n  server { listen 127.0.0.1:${b2}; location / { return 200 "b"; } }`,
      ),
    );
    children.push(
      await startNginx(
        dir,
        'proxy',
        `  upstream shards { hash $http_x_key consistent; server 127.0.0.1:${b1}; keepalive 64; keepalive_requests 1000000; }\n  server { listen 127.0.0.1:${ngx}; location / { proxy_pass http://shards; proxy_http_version 1.1; proxy_set_header Connection ""; } }`,
        workers,
      ),
    );
    const p = spawn(process.execPath, [PEER, String(peer), `127.0.0.1:${b1}`, String(workers)], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    children.push(p);
    await firstLine(p);

    await store.put('/muster/services/bench/spec', JSON.stringify({ partitions: 1 }));
    await store.put(
      '/muster/services/bench/instances/a',
      JSON.stringify({ id: 'a', address: `127.0.0.1:${b1}`, state: 'draining' }),
    );
    await store.put(
      '/muster/services/bench/instances/b',
      JSON.stringify({ id: 'b', address: `127.0.0.1:${b2}`, state: 'draining' }),
    );
    await store.put('/muster/services/bench/owners/0', JSON.stringify({ instance: 'a', since: '' }));
    const configFile = join(dir, 'proxy.json');
    writeFileSync(
      configFile,
      JSON.stringify({
        service: 'bench',
        listen: '127.0.0.1:0',
        key: 'header:x-key',
        workers,
        admin: false,
      }),
    );
    const m = spawn(process.execPath, [bin, 'proxy', '--config', configFile, '--store', serve.url], {
      stdio: ['ignore', 'pipe', 'inherit'],
      env: { ...process.env, MUSTER_LOG_LEVEL: 'warn' },
    });
    children.push(m);
    const muster = (JSON.parse(await firstLine(m)) as { listen: string[] }).listen[0] as string;

    if (idleMs > 0) {
      // start-up is over: its compilations, and the memory reducer's collections some 15 s after it
      await new Promise((r) => setTimeout(r, 20_000));
      const pids = [m.pid ?? 0, ...descendants(m.pid ?? 0)];
      const before = pids.map(threadCpuNs);
      await new Promise((r) => setTimeout(r, idleMs));
      const used = pids.map((pid, i) => (threadCpuNs(pid) - (before[i] as number)) / 1e6);
      const comm = (pid: number): string => {
        try {
          return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
        } catch {
          return '?';
        }
      };
      const perSecond = (ms: number): string => `${fmt(ms / (idleMs / 1000), 2)} ms/s`;
      const rest = pids.slice(1).map((pid, i) => [comm(pid), used[i + 1] ?? Number.NaN] as const);
      console.log(
        `idle, no client, ${fmt(idleMs / 1000, 0)} s: muster master ${fmt(used[0] ?? Number.NaN, 1)} ms (${perSecond(used[0] ?? Number.NaN)}); ` +
          `workers ${rest
            .filter(([c]) => c === 'node')
            .map(([, ms]) => `${fmt(ms, 1)} ms (${perSecond(ms)})`)
            .join(', ')}; other processes (the process kernel's guards) ${fmt(
            rest.filter(([c]) => c !== 'node').reduce((n, [, ms]) => n + ms, 0),
            1,
          )} ms`,
      );
      if (args.includes('--only-idle')) return;
    }
    if (args.includes('--only-changes')) {
      await routeChanges(store, muster, changes);
      return;
    }
    console.log(
      `proxy benchmark: wrk -t1 -c${connections} -d${seconds}s, ${workers} worker(s) each (nginx worker_processes, http-proxy under node:cluster), one nginx return 200 backend`,
    );
    const paths: [string, string][] = [
      ['direct (backend)', `http://127.0.0.1:${b1}/`],
      ['nginx hash consistent', `http://127.0.0.1:${ngx}/`],
      ['node http-proxy', `http://127.0.0.1:${peer}/`],
      ['muster proxy', `http://${muster}/`],
    ];
    // a short unmeasured run first: the Node proxies reach optimised code after some thousand requests
    for (const [, url] of paths) await wrk(url, connections, 1);
    const results = new Map<string, WrkResult>();
    for (const [name, url] of paths) {
      const r = await wrk(url, connections, seconds);
      results.set(name, r);
      console.log(
        `  ${name.padEnd(24)} ${fmt(r.rps, 0).padStart(8)} req/s  p50 ${r.p50.padStart(8)}  p99 ${r.p99.padStart(8)}  errors ${r.errors}`,
      );
    }
    const ours = results.get('muster proxy')?.rps ?? Number.NaN;
    console.log(
      `  muster / nginx ×${fmt(ours / (results.get('nginx hash consistent')?.rps ?? Number.NaN))}, muster / http-proxy ×${fmt(ours / (results.get('node http-proxy')?.rps ?? Number.NaN))}`,
    );

    // fixed rate: added latency at a load well under saturation (the issue's "≤ 1 ms p99 at 5k/s")
    console.log(
      `fixed rate: ${fixed} req/s for ${seconds}s after a 1 s warm-up, 50 connections, latency from each request's due time (wrk2's model)`,
    );
    const rates = new Map<string, RateResult>();
    for (const [name, url] of paths) {
      const r = await fixedRate(url, fixed, seconds, 50);
      rates.set(name, r);
      console.log(
        `  ${name.padEnd(24)} p50 ${fmt(r.p50, 3).padStart(7)} ms  p99 ${fmt(r.p99, 3).padStart(7)} ms  p99.9 ${fmt(r.p999, 3).padStart(7)} ms  ok ${r.ok}  errors ${r.errors}`,
      );
    }
    const base = rates.get('direct (backend)')?.p99 ?? Number.NaN;
    console.log(
      `  added p99 over direct: muster ${fmt((rates.get('muster proxy')?.p99 ?? Number.NaN) - base, 3)} ms, nginx ${fmt((rates.get('nginx hash consistent')?.p99 ?? Number.NaN) - base, 3)} ms, http-proxy ${fmt((rates.get('node http-proxy')?.p99 ?? Number.NaN) - base, 3)} ms`,
    );

    // the same rate from h2load, rounds alternating the paths (the host's noise moves a single p99)
    const h2load = findBinary(arg(args, '--h2load') ?? 'h2load');
    const rounds = Number(arg(args, '--rounds') ?? 5);
    const perf = vcpuGapsPerf(args, console.log);
    if (h2load === undefined) {
      console.log('fixed rate, h2load: skipped (h2load is not on PATH: apt-get install nghttp2-client)');
    } else {
      console.log(
        `fixed rate, h2load: ${fixed} req/s for ${seconds}s after a 1 s warm-up, 50 connections opened 1 per ms, latency from send; ${rounds} rounds alternating the paths (the proxies' order rotating)`,
      );
      // Each path's processes, for the CPU the *other* proxies use during a path's round: an idle
      // Node process (http-proxy, muster's master) runs V8's memory reducer — a full collection on
      // both cores — some seconds after its own busy round, i.e. inside the next path's round. The
      // proxies' order rotates from round to round, so that no path always follows the same one.
      const pidsOf = (name: string): number[] => {
        if (name.startsWith('nginx')) return [children[1]?.pid ?? 0, ...descendants(children[1]?.pid ?? 0)];
        if (name.startsWith('node')) return [p.pid ?? 0, ...descendants(p.pid ?? 0)];
        if (name.startsWith('muster')) return [m.pid ?? 0, ...descendants(m.pid ?? 0)];
        return [];
      };
      const cpuMs = (name: string): number =>
        pidsOf(name)
          .map(threadCpuNs)
          .reduce((n, ns) => n + (Number.isNaN(ns) ? 0 : ns), 0) / 1e6;
      const p99s = new Map<string, number[]>(paths.map(([name]) => [name, []]));
      const added = new Map<string, number[]>(paths.map(([name]) => [name, []]));
      const addedOutside = new Map<string, number[]>(paths.map(([name]) => [name, []]));
      for (let round = 1; round <= rounds; round++) {
        const row: string[] = [];
        let direct = Number.NaN;
        let directOutside = Number.NaN;
        const proxies = paths.slice(1);
        const turn = args.includes('--fixed-order') ? 0 : (round - 1) % proxies.length;
        const order = [paths[0] as [string, string], ...proxies.slice(turn), ...proxies.slice(0, turn)];
        for (const [name, url] of order) {
          const others = proxies.map(([n]) => n).filter((n) => n !== name);
          const before = others.map(cpuMs);
          const r = await h2loadRate(h2load, url, fixed, seconds, 50, join(dir, 'h2load.log'), perf);
          const busy = others
            .map((n, i) => [n.split(' ')[0], cpuMs(n) - (before[i] as number)] as const)
            .filter(([, ms]) => ms >= 20);
          if (name === 'direct (backend)') {
            direct = r.p99;
            directOutside = r.gaps?.p99Outside ?? Number.NaN;
          } else {
            added.get(name)?.push(r.p99 - direct);
            if (r.gaps !== undefined) addedOutside.get(name)?.push(r.gaps.p99Outside - directOutside);
          }
          p99s.get(name)?.push(r.p99);
          const g =
            r.gaps === undefined
              ? ''
              : `; vCPU gaps ${r.gaps.count} (longest ${fmt(r.gaps.longestMs, 1)} ms), >10 ms in one ${r.gaps.overInGap}, p99 outside ${fmt(r.gaps.p99Outside, 3)}`;
          const o =
            busy.length === 0
              ? ''
              : `; others' CPU ${busy.map(([n, ms]) => `${n} ${fmt(ms, 0)} ms`).join(', ')}`;
          row.push(
            `${name.split(' ')[0]} p50 ${fmt(r.p50, 3)} p99 ${fmt(r.p99, 3)} p99.9 ${fmt(r.p999, 3)} (>10 ms ${r.over}, errors ${r.errors}${g}${o})`,
          );
        }
        console.log(`  round ${round}: ${row.join('; ')}`);
      }
      console.log(
        `  median p99: ${paths.map(([name]) => `${name.split(' ')[0]} ${fmt(median(p99s.get(name) ?? []), 3)} ms`).join(', ')}`,
      );
      console.log(
        `  median added p99 over direct (per round): ${paths
          .slice(1)
          .map(([name]) => `${name.split(' ')[0]} ${fmt(median(added.get(name) ?? []), 3)} ms`)
          .join(', ')}`,
      );
      if (perf !== undefined) {
        console.log(
          `  median added p99 over direct, requests overlapping no vCPU gap (a diagnosis, not the goal's figure): ${paths
            .slice(1)
            .map(([name]) => `${name.split(' ')[0]} ${fmt(median(addedOutside.get(name) ?? []), 3)} ms`)
            .join(', ')}`,
        );
      }
    }

    // route change → first request routed by it
    await routeChanges(store, muster, changes);
  } finally {
    for (const c of children.reverse()) {
      c.kill('SIGTERM');
      if (c.exitCode === null && c.signalCode === null) await new Promise((r) => c.once('exit', r));
    }
    await store.close();
    await serve.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * `changes` route-pin writes alternating between the two instances while one client sends requests
 * back to back through `muster proxy` with the pinned key: the time from just before each write to
 * the first response from the new backend, and — the floor of the same path — to the write's event
 * reaching a watch in this process.
 */
async function routeChanges(store: Store, muster: string, changes: number): Promise<void> {
  const key = '/muster/services/bench/routes/realm1';
  const watch = store.watch(key);
  const seen = new Map<number, number>();
  const watching = (async () => {
    for await (const batch of watch) {
      if (batch.type === 'events') seen.set(batch.revision, performance.now());
    }
  })();
  const agent = new Agent({ connections: 1 });
  const routed: number[] = [];
  const watched: number[] = [];
  const acked: number[] = [];
  const after: number[] = [];
  let missed = 0;
  let target = 'b';
  for (let i = 0; i < changes; i++) {
    const expect = target;
    let sent = Number.NaN;
    let stop = false;
    const loop = (async () => {
      for (;;) {
        const started = performance.now();
        const r = await request(`http://${muster}/`, { dispatcher: agent, headers: { 'x-key': 'realm1' } });
        const text = await r.body.text();
        // Only a request sent after the write began can show it.
        if (text === expect && started >= sent) return performance.now() - sent;
        if (stop) return Number.NaN;
      }
    })();
    await new Promise((r) => setTimeout(r, 10));
    sent = performance.now();
    const put = await store.put(key, JSON.stringify({ instance: target }));
    acked.push(performance.now() - sent);
    const d = await Promise.race([loop, new Promise<number>((r) => setTimeout(() => r(Number.NaN), 5000))]);
    stop = true;
    await loop.catch(() => undefined);
    if (Number.isNaN(d)) missed++;
    else routed.push(d);
    const w = seen.get(put.revision);
    if (w !== undefined) watched.push(w - sent);
    if (w !== undefined && !Number.isNaN(d)) after.push(d - (w - sent));
    target = target === 'a' ? 'b' : 'a';
  }
  watch.close();
  await watching.catch(() => undefined);
  await agent.close();
  console.log(`route change → first request routed by it: ${latencySummary(routed)}, missed ${missed}`);
  console.log(`  floor, the same write → a watch in the bench process: ${latencySummary(watched)}`);
  console.log(`  the write's acknowledgement: ${latencySummary(acked)}`);
  console.log(`  the proxy's part (routed − watched, per change): ${latencySummary(after)}`);
}
