/**
 * `npm run bench -- proxy [--duration 8s] [--connections 50] [--changes 20]`: `muster proxy` side by
 * side with nginx (`hash $http_x_key consistent`, upstream keep-alive) and node `http-proxy` (keep-alive
 * agent), one worker each, in front of the same nginx `return 200` backend, under the same load
 * (`wrk -t1 -cC -dD --latency`, one routing key in an `X-Key` header). Prints requests/s and latency
 * p50/p99 per path, with the direct path to the backend as the ceiling.
 *
 * Then the route change → first request routed by it: a client sends requests back to back through
 * `muster proxy` while the benchmark pins the key to the other of two backends (`route pin`, one store
 * write to a `muster serve` started here); the figure is the time from the write's acknowledgement to
 * the first response from the new backend.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Agent, request } from 'undici';
import { openStore } from '../src/store/index.js';
import { findBinary, freePort, startTempServe } from '../src/testing/index.js';
import { toMillis } from '../src/util/duration.js';
import { arg, fmt, latencySummary } from './stats.js';

const BIN = fileURLToPath(new URL('../../bin/muster.js', import.meta.url));
const PEER = fileURLToPath(new URL('./proxy-peer.js', import.meta.url));

interface WrkResult {
  readonly rps: number;
  readonly p50: string;
  readonly p99: string;
  readonly errors: string;
}

function wrk(url: string, connections: number, seconds: number): WrkResult {
  const r = spawnSync(
    'wrk',
    ['-t1', `-c${connections}`, `-d${seconds}s`, '--latency', '-H', 'X-Key: realm1', url],
    { encoding: 'utf8' },
  );
  const out = r.stdout ?? '';
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? 'NaN');
  const p50 = /\s50%\s+(\S+)/.exec(out)?.[1] ?? '?';
  const p99 = /\s99%\s+(\S+)/.exec(out)?.[1] ?? '?';
  const errs = /Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)/.exec(out);
  return { rps, p50, p99, errors: errs === null ? '0' : errs[0] };
}

function nginxConfig(prefix: string, body: string): string {
  return `daemon off;\nmaster_process off;\nworker_processes 1;\npid ${prefix}/nginx.pid;\nerror_log ${prefix}/error.log warn;\nevents { worker_connections 4096; }\nhttp {\n  access_log off;\n  client_body_temp_path ${prefix}/tmp;\n  proxy_temp_path ${prefix}/tmp;\n  fastcgi_temp_path ${prefix}/tmp;\n  uwsgi_temp_path ${prefix}/tmp;\n  scgi_temp_path ${prefix}/tmp;\n${body}\n}\n`;
}

async function startNginx(dir: string, name: string, body: string): Promise<ChildProcess> {
  const prefix = join(dir, name);
  mkdirSync(join(prefix, 'tmp'), { recursive: true });
  const conf = join(prefix, 'nginx.conf');
  writeFileSync(conf, nginxConfig(prefix, body));
  const nginx = findBinary('nginx') ?? '/usr/sbin/nginx';
  const child = spawn(nginx, ['-p', prefix, '-c', conf], { stdio: ['ignore', 'ignore', 'inherit'] });
  await new Promise((r) => setTimeout(r, 300));
  if (child.exitCode !== null) throw new Error(`nginx ${name} exited (${child.exitCode})`);
  return child;
}

async function firstLine(child: ChildProcess): Promise<string> {
  return new Promise((resolve, reject) => {
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).once('line', resolve);
    child.once('exit', (code) => reject(new Error(`exited with ${code}`)));
  });
}

export async function run(args: string[]): Promise<void> {
  const seconds = Math.max(1, Math.round(toMillis(arg(args, '--duration') ?? '8s') / 1000));
  const connections = Number(arg(args, '--connections') ?? 50);
  const changes = Number(arg(args, '--changes') ?? 20);
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
        `  upstream shards { hash $http_x_key consistent; server 127.0.0.1:${b1}; keepalive 64; }\n  server { listen 127.0.0.1:${ngx}; location / { proxy_pass http://shards; proxy_http_version 1.1; proxy_set_header Connection ""; } }`,
      ),
    );
    const p = spawn(process.execPath, [PEER, String(peer), `127.0.0.1:${b1}`], {
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
        workers: 1,
        admin: false,
      }),
    );
    const m = spawn(process.execPath, [BIN, 'proxy', '--config', configFile, '--store', serve.url], {
      stdio: ['ignore', 'pipe', 'inherit'],
      env: { ...process.env, MUSTER_LOG_LEVEL: 'warn' },
    });
    children.push(m);
    const muster = (JSON.parse(await firstLine(m)) as { listen: string[] }).listen[0] as string;

    console.log(
      `proxy benchmark: wrk -t1 -c${connections} -d${seconds}s, one worker each, nginx return 200 backend`,
    );
    const paths: [string, string][] = [
      ['direct (backend)', `http://127.0.0.1:${b1}/`],
      ['nginx hash consistent', `http://127.0.0.1:${ngx}/`],
      ['node http-proxy', `http://127.0.0.1:${peer}/`],
      ['muster proxy', `http://${muster}/`],
    ];
    // a short unmeasured run first: the Node proxies reach optimised code after some thousand requests
    for (const [, url] of paths) wrk(url, connections, 1);
    const results = new Map<string, WrkResult>();
    for (const [name, url] of paths) {
      const r = wrk(url, connections, seconds);
      results.set(name, r);
      console.log(
        `  ${name.padEnd(24)} ${fmt(r.rps, 0).padStart(8)} req/s  p50 ${r.p50.padStart(8)}  p99 ${r.p99.padStart(8)}  errors ${r.errors}`,
      );
    }
    const ours = results.get('muster proxy')?.rps ?? Number.NaN;
    console.log(
      `  muster / nginx ×${fmt(ours / (results.get('nginx hash consistent')?.rps ?? Number.NaN))}, muster / http-proxy ×${fmt(ours / (results.get('node http-proxy')?.rps ?? Number.NaN))}`,
    );

    // route change → first request routed by it
    const agent = new Agent({ connections: 1 });
    const delays: number[] = [];
    let target = 'b';
    for (let i = 0; i < changes; i++) {
      const expect = target === 'a' ? 'a' : 'b';
      let wrote = Number.NaN;
      let stop = false;
      const loop = (async () => {
        for (;;) {
          const r = await request(`http://${muster}/`, { dispatcher: agent, headers: { 'x-key': 'realm1' } });
          const text = await r.body.text();
          if (text === expect && !Number.isNaN(wrote)) return performance.now() - wrote;
          if (stop) return Number.NaN;
        }
      })();
      await new Promise((r) => setTimeout(r, 20));
      await store.put('/muster/services/bench/routes/realm1', JSON.stringify({ instance: target }));
      wrote = performance.now();
      const d = await Promise.race([loop, new Promise<number>((r) => setTimeout(() => r(Number.NaN), 5000))]);
      stop = true;
      await loop.catch(() => undefined);
      delays.push(d);
      target = target === 'a' ? 'b' : 'a';
    }
    await agent.close();
    console.log(
      `  route change → first request routed by it: ${latencySummary(delays.filter((d) => !Number.isNaN(d)))}, missed ${delays.filter((d) => Number.isNaN(d)).length}`,
    );
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
