/**
 * `npm run bench -- proxy-cpu [--duration 3s] [--rounds 3] [--connections 50]`: CPU per request of
 * proxy data paths, A/B in one process (the issue-16 question "does a leaner data path pay?"). In
 * this process, in front of one nginx `return 200` backend, under the same `wrk -t1 -cC` load with one
 * routing key: (a) muster's worker data path (`startProxy`: raw `net` server with llhttp → routing
 * table → raw keep-alive upstream pool, since session 7; node:http server in session 6, undici before), (b) a bare node:http server + undici Pool (the baselines' floor), (c) the raw `net` prototype
 * (bench/proxy-raw.ts), (d) the prototype's server side with undici's `dispatch` upstream (which half of
 * the gain is whose). Rounds run a, b, c, d then d, c, b, a (and so on); the figure per path is the median over rounds of
 * this process's CPU time (user + system, `process.cpuUsage()`) divided by the requests wrk completed,
 * with the young-generation collections per 10k requests (`PerformanceObserver` 'gc'). The ratio is
 * what matters: the absolute µs move with the machine's load.
 *
 * `--compare DIR[,DIR…]`: adds muster's worker path from other builds (`DIR/src/proxy/index.js`, e.g.
 * a copy of `dist/` made before a change) beside this one — the A/B of a change to the data path in one
 * process. `--paths a,b,…`: only the paths whose name starts with one of these (`muster`, `compare`,
 * `bare`, `raw`).
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo, Server as NetServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { PerformanceObserver } from 'node:perf_hooks';
import { Pool } from 'undici';
import {
  openRoutingSource,
  parseKeySpec,
  proxyConfigFrom,
  RoutingTable,
  startProxy,
} from '../src/proxy/index.js';
import { openStore } from '../src/store/index.js';
import { freePort } from '../src/testing/index.js';
import { toMillis } from '../src/util/duration.js';
import { startNginx } from './proxy.js';
import { RawProxy } from './proxy-raw.js';
import { arg, fmt, median } from './stats.js';

function listen(server: Server | NetServer): Promise<string> {
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => resolve(`127.0.0.1:${(server.address() as AddressInfo).port}`)),
  );
}

export async function run(args: string[]): Promise<void> {
  const seconds = Math.max(1, Math.round(toMillis(arg(args, '--duration') ?? '3s') / 1000));
  const rounds = Number(arg(args, '--rounds') ?? 3);
  const connections = Number(arg(args, '--connections') ?? 50);
  const compareDirs = arg(args, '--compare')?.split(',') ?? [];
  const only = arg(args, '--paths')?.split(',');
  const dir = mkdtempSync(join(tmpdir(), 'muster-bench-proxy-cpu-'));
  const port = await freePort();
  const nginx = await startNginx(
    dir,
    'backend',
    `  server { listen 127.0.0.1:${port}; location / { return 200 "a"; } }`,
  );
  const store = await openStore('memory:');
  let scavenges = 0;
  let gcMs = 0;
  const gc = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      gcMs += e.duration;
      if ((e as unknown as { detail?: { kind?: number } }).detail?.kind === 1) scavenges++;
    }
  });
  gc.observe({ entryTypes: ['gc'] });
  try {
    await store.put('/muster/services/bench/spec', JSON.stringify({ partitions: 1 }));
    await store.put(
      '/muster/services/bench/instances/a',
      JSON.stringify({ id: 'a', address: `127.0.0.1:${port}` }),
    );
    await store.put('/muster/services/bench/owners/0', JSON.stringify({ instance: 'a', since: '' }));
    const config = proxyConfigFrom({
      service: 'bench',
      listen: '127.0.0.1:0',
      key: 'header:x-key',
      admin: false,
      workers: 1,
    });
    const muster = await startProxy({ config, store });
    const compares: { dir: string; proxy: Awaited<ReturnType<typeof startProxy>> }[] = [];
    for (const dir of compareDirs) {
      const other = (await import(pathToFileURL(resolve(dir, 'src/proxy/index.js')).href)) as {
        startProxy: typeof startProxy;
      };
      compares.push({ dir, proxy: await other.startProxy({ config, store }) });
    }
    const pool = new Pool(`http://127.0.0.1:${port}`, { connections: 256, pipelining: 1 });
    const bare = createServer((req, res) => {
      pool.stream(
        { path: req.url ?? '/', method: req.method ?? 'GET', headers: req.headers as Record<string, string> },
        ({ statusCode, headers }) => {
          res.writeHead(statusCode, headers as Record<string, string>);
          return res;
        },
        (err) => {
          if (err !== null) res.destroy();
        },
      );
    });
    const source = openRoutingSource(store, 'bench');
    await source.ready();
    const raw = new RawProxy(new RoutingTable(source), parseKeySpec('header:x-key'));
    const half = new RawProxy(new RoutingTable(source), parseKeySpec('header:x-key'), 'undici');
    const all: [string, string][] = [
      ['muster (raw server + pool)', `http://${muster.addresses[0] as string}/`],
      ['bare node:http + undici', `http://${await listen(bare)}/`],
      ['raw net prototype', `http://${await listen(raw.server)}/`],
      ['raw server + undici dispatch', `http://${await listen(half.server)}/`],
    ];
    all.splice(
      1,
      0,
      ...compares.map(({ dir, proxy }): [string, string] => [
        `compare (${dir})`,
        `http://${proxy.addresses[0] as string}/`,
      ]),
    );
    const paths = all.filter(([name]) => only === undefined || only.some((o) => name.startsWith(o)));
    const results = new Map<
      string,
      { us: number[]; user: number[]; scav: number[]; gc: number[]; rps: number[] }
    >();
    for (const [name, url] of paths) {
      await wrkAsync(url, connections, 1); // warm-up: optimised code
      results.set(name, { us: [], user: [], scav: [], gc: [], rps: [] });
    }
    console.log(
      `proxy CPU per request, one process: wrk -t1 -c${connections} -d${seconds}s, ${rounds} rounds, nginx return 200 backend`,
    );
    for (let round = 0; round < rounds; round++) {
      // every other round in reverse order: no path always runs right after another
      for (const [name, url] of round % 2 === 0 ? paths : [...paths].reverse()) {
        const s0 = scavenges;
        const g0 = gcMs;
        const cpu = process.cpuUsage();
        // wrk runs in a child; this process serves it meanwhile
        const n = await wrkAsync(url, connections, seconds);
        const used = process.cpuUsage(cpu);
        const r = results.get(name)!;
        r.us.push((used.user + used.system) / n);
        r.user.push(used.user / n);
        r.scav.push(((scavenges - s0) / n) * 10_000);
        r.gc.push(((gcMs - g0) * 1000) / n);
        r.rps.push(n / seconds);
      }
    }
    const base = median(results.get(paths[0]![0])!.us);
    for (const [name] of paths) {
      const r = results.get(name)!;
      console.log(
        `  ${name.padEnd(28)} ${fmt(median(r.us)).padStart(6)} µs CPU/request (user ${fmt(median(r.user))}; ×${fmt(base / median(r.us))} less than muster)  ${fmt(median(r.rps), 0).padStart(7)} req/s  scavenges/10k ${fmt(median(r.scav))}  GC ${fmt(median(r.gc))} µs/request`,
      );
    }
    // the paired A/B: per round, this build's µs over each compared build's (rounds ran side by side)
    const first = paths[0]?.[0] ?? '';
    for (const [name] of paths.filter(([n]) => n.startsWith('compare') && first.startsWith('muster'))) {
      const a = results.get(first)!;
      const b = results.get(name)!;
      for (const part of ['us', 'user'] as const) {
        const ratios = a[part].map((x, i) => x / (b[part][i] as number));
        console.log(
          `  muster / ${name}, ${part === 'us' ? 'CPU' : 'user CPU'} per round: ${ratios.map((x) => fmt(x, 3)).join(' ')} (median ${fmt(median(ratios), 3)})`,
        );
      }
    }
    console.log(
      `  this process after the rounds: RSS ${fmt(process.memoryUsage().rss / 2 ** 20, 0)} MiB (flags: ${process.execArgv.join(' ') || 'none'})`,
    );
    await muster.close();
    for (const c of compares) await c.proxy.close();
    source.close();
    bare.close();
    raw.server.close();
    half.server.close();
    await pool.close();
  } finally {
    gc.disconnect();
    nginx.kill('SIGTERM');
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** wrk in a child process without blocking this event loop; resolves to the requests completed. */
async function wrkAsync(url: string, connections: number, seconds: number): Promise<number> {
  return new Promise((resolve) => {
    const child = spawn('wrk', ['-t1', `-c${connections}`, `-d${seconds}s`, '-H', 'X-Key: realm1', url]);
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.on('exit', () => {
      if (/Non-2xx|Socket errors/.test(out)) console.log(`  wrk reported errors for ${url}:\n${out}`);
      resolve(Number(/(\d+) requests in/.exec(out)?.[1] ?? 'NaN'));
    });
  });
}
