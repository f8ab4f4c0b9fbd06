/**
 * `npm run bench -- bus [--calls N] [--rate R] [--seconds S] [--inflight K] [--subscribers M]
 * [--messages P] [--msg-rate Q] [--only bus,nats,grpc]`: the muster bus side by side with NATS (through
 * Debian's `nats-server`, `nats` client) and `@grpc/grpc-js`, in one run, each peer in a process of
 * its own and this process the client:
 *
 * 1. RPC latency, open loop at R calls/s (default 5,000) for N calls (default 20,000): p50 / p99.
 * 2. Throughput with K calls in flight (default 32) for S seconds (default 5): calls/s.
 * 3. Fan-out: this process publishes P messages (default 5,000) at Q/s (default 1,000) to M
 *    subscriber processes (default 20), after two unmeasured seconds of warm-up messages at the same
 *    rate; delay from send to
 *    delivery on the host's monotonic clock (the same for every process),
 *    p50 / p99 / max, and lost messages. Then (muster bus; skip with `--no-stall`) the same with one
 *    more subscriber frozen by SIGSTOP for the whole run: the others' figures, to compare (the
 *    issue's goal: a stalled subscriber changes the others' p99 by ≤ 10 %).
 *
 * Smoke run: `npm run bench -- bus --calls 200 --seconds 1 --subscribers 3 --messages 50`.
 * Run it alone: a concurrent test suite changes the tails several-fold (docs/benchmarks.md).
 */
import * as grpc from '@grpc/grpc-js';
import { type ChildProcess, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { connect as natsConnect, type NatsConnection } from 'nats';
import { openBus, type Bus } from '../src/bus/index.js';
import { openStore } from '../src/store/index.js';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findBinary, freePort } from '../src/testing/index.js';
import { hostMonotonicMs } from '../src/util/host-clock.js';
import { ECHO_SERVICE } from './bus-grpc.js';
import { arg, fmt, quantile } from './stats.js';

const PEER = new URL('./bus-peer.js', import.meta.url).pathname;
const quiet = { info: () => undefined, warn: () => undefined, error: () => undefined };
const children = new Set<ChildProcess>();

interface Peer {
  readonly proc: ChildProcess;
  readonly ready: Record<string, unknown>;
  /** Resolves with the last JSON line printed before exit. */
  readonly last: Promise<Record<string, unknown>>;
}

async function spawnPeer(args: string[]): Promise<Peer> {
  const proc = spawn(process.execPath, [PEER, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  children.add(proc);
  const rl = createInterface({ input: proc.stdout as NodeJS.ReadableStream });
  let lastLine: Record<string, unknown> = {};
  const last = new Promise<Record<string, unknown>>((resolve) => proc.once('exit', () => resolve(lastLine)));
  const ready = await new Promise<Record<string, unknown>>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`peer ${args[0]} not ready in 30 s`)), 30_000);
    proc.once('exit', (code) => reject(new Error(`peer ${args[0]} exited with ${code}`)));
    rl.on('line', (line) => {
      const msg = JSON.parse(line) as Record<string, unknown>;
      lastLine = msg;
      if (msg.ready === true) {
        clearTimeout(timer);
        resolve(msg);
      }
    });
  });
  return { proc, ready, last };
}

const BIN = new URL('../../bin/muster.js', import.meta.url).pathname;

/** `muster serve` in a child process on a free port, with a temporary data directory. */
async function startServeProcess(): Promise<{ url: string; close(): Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'muster-bench-bus-'));
  const port = await freePort();
  const proc = spawn(
    process.execPath,
    [BIN, 'serve', '--data-dir', dir, '--listen', `127.0.0.1:${port}`, '--log-level', 'warn'],
    { stdio: ['ignore', 'ignore', 'inherit'] },
  );
  children.add(proc);
  const url = `etcd://127.0.0.1:${port}`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    const probe = await openStore(url);
    try {
      await probe.get('/muster/ping');
      break;
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 100));
    } finally {
      await probe.close();
    }
  }
  return {
    url,
    close: async () => {
      if (proc.exitCode === null && proc.signalCode === null) {
        const exited = new Promise((r) => proc.once('exit', r));
        proc.kill('SIGTERM');
        await exited;
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
}

type Call = (i: number) => Promise<unknown>;

/**
 * Open loop, constant arrival: call i is due at i/rate seconds, whether or not earlier ones finished.
 * The loop sleeps on a timer while the next call is more than 2 ms away and polls with
 * `setImmediate` (I/O is read between polls) when it is closer. Latency is measured from the actual
 * send; `late` is how far behind its schedule each call was sent — if its p99 is not small next to
 * the latency p99, the generator (this process), not the bus, is the bottleneck.
 *
 * The generator allocates nothing per poll and keeps nothing per call but two numbers (no promise
 * per poll, no array of the calls' promises): its own garbage would otherwise be collected in this
 * process's scavenges, whose pauses land in the latencies it measures.
 */
function openLoop(call: Call, n: number, ratePerSec: number): Promise<{ lat: number[]; late: number[] }> {
  const lat = new Float64Array(n);
  const late = new Float64Array(n);
  const interval = 1000 / ratePerSec;
  const t0 = performance.now();
  let i = 0;
  let done = 0;
  let failed: Error | undefined;
  return new Promise((resolve, reject) => {
    const finish = (): void => {
      if (++done < n) return;
      if (failed !== undefined) reject(failed);
      else resolve({ lat: Array.from(lat), late: Array.from(late) });
    };
    const send = (k: number): void => {
      const started = performance.now();
      late[k] = started - (t0 + k * interval);
      call(k).then(
        () => {
          lat[k] = performance.now() - started;
          finish();
        },
        (err: unknown) => {
          failed ??= err instanceof Error ? err : new Error(String(err));
          finish();
        },
      );
    };
    const tick = (): void => {
      const now = performance.now();
      while (i < n && t0 + i * interval <= now) send(i++);
      if (i >= n) return;
      const wait = t0 + i * interval - performance.now();
      if (wait > 2) setTimeout(tick, wait - 1);
      else setImmediate(tick);
    };
    tick();
  });
}

/** Closed loop: K workers, each calling again as soon as its call returns, for `seconds`. */
async function closedLoop(call: Call, inflight: number, seconds: number): Promise<number> {
  let done = 0;
  const end = performance.now() + seconds * 1000;
  await Promise.all(
    Array.from({ length: inflight }, async () => {
      while (performance.now() < end) {
        await call(done);
        done++;
      }
    }),
  );
  return done / seconds;
}

function payload(i: number): { i: number; pad: string } {
  return { i, pad: 'x'.repeat(100) };
}

async function rpcSide(name: string, call: Call, o: Options): Promise<void> {
  // Warm up (JIT, connections), unmeasured.
  await closedLoop(call, 8, Math.min(1, o.seconds));
  const { lat, late } = await openLoop(call, o.calls, o.rate);
  const tput = await closedLoop(call, o.inflight, o.seconds);
  console.log(
    `${name.padEnd(10)} rpc @${o.rate}/s: p50 ${fmt(quantile(lat, 0.5) * 1000, 0)} µs, p99 ${fmt(quantile(lat, 0.99) * 1000, 0)} µs, max ${fmt(Math.max(...lat), 2)} ms (n=${lat.length}; sent late by p99 ${fmt(quantile(late, 0.99) * 1000, 0)} µs) | ${o.inflight} in flight: ${Math.round(tput).toLocaleString('en-US')} calls/s`,
  );
}

async function fanOut(
  name: string,
  subscribers: Peer[],
  publish: (body: { t: number; i: number }) => Promise<unknown>,
  o: Options,
  stall = false,
): Promise<void> {
  // Sends `count` messages at the measured rate (each stamped with the host's monotonic clock just
  // before its publish), numbered from 0, or all -1 for the warm-up.
  const paced = async (count: number, warmUp: boolean): Promise<void> => {
    const interval = 1000 / o.msgRate;
    const t0 = performance.now();
    for (let i = 0; i < count; i++) {
      const wait = t0 + i * interval - performance.now();
      if (wait > 1) await new Promise((r) => setTimeout(r, wait));
      await publish({ t: hostMonotonicMs(), i: warmUp ? -1 : i });
    }
  };
  // Warm-up, not counted (subscribers ignore i < 0): two seconds at the measured rate, so that the
  // connections are open and every process's receive path is optimized. With 50 warm-up messages
  // (before), the first ~1,000 measured ones ran unoptimized: `node --trace-opt` shows a
  // subscriber's `receive` optimized by TurboFan between its 800th and 1,600th message at 1/ms.
  await paced(Math.round(2 * o.msgRate), true);
  await new Promise((r) => setTimeout(r, 200));
  // With `stall`, the first subscriber is frozen (SIGSTOP) for the whole run; the figures are the others'.
  const frozen = stall ? subscribers[0] : undefined;
  frozen?.proc.kill('SIGSTOP');
  await paced(o.messages, false);
  await new Promise((r) => setTimeout(r, 500));
  frozen?.proc.kill('SIGCONT');
  for (const s of subscribers) s.proc.kill('SIGTERM');
  const measured = subscribers.filter((s) => s !== frozen);
  const results = await Promise.all(measured.map((s) => s.last));
  const delays = results.flatMap((r) => (r.delays as number[] | undefined) ?? []);
  const lost = o.messages * measured.length - delays.length;
  const label = stall ? `fan-out to ${measured.length} + 1 stalled` : `fan-out to ${measured.length}`;
  console.log(
    `${name.padEnd(10)} ${label} @${o.msgRate}/s: p50 ${fmt(quantile(delays, 0.5))} ms, p99 ${fmt(quantile(delays, 0.99))} ms, max ${fmt(Math.max(...delays))} ms, lost ${lost} of ${o.messages * measured.length}`,
  );
}

interface Options {
  calls: number;
  rate: number;
  seconds: number;
  inflight: number;
  subscribers: number;
  messages: number;
  msgRate: number;
  stall: boolean;
  only: Set<string>;
}

export async function run(args: string[]): Promise<void> {
  const o: Options = {
    calls: Number(arg(args, '--calls') ?? 20_000),
    rate: Number(arg(args, '--rate') ?? 5000),
    seconds: Number(arg(args, '--seconds') ?? 5),
    inflight: Number(arg(args, '--inflight') ?? 32),
    subscribers: Number(arg(args, '--subscribers') ?? 20),
    messages: Number(arg(args, '--messages') ?? 5000),
    msgRate: Number(arg(args, '--msg-rate') ?? 1000),
    stall: !args.includes('--no-stall'),
    only: new Set((arg(args, '--only') ?? 'bus,nats,grpc').split(',')),
  };
  // The store runs in a process of its own, so that its work (lease keep-alives, WAL writes) does
  // not share this process's event loop with the load generator.
  const serve = await startServeProcess();
  const store = await openStore(serve.url);
  let bus: Bus | undefined;
  let nats: ChildProcess | undefined;
  let nc: NatsConnection | undefined;
  try {
    console.log(
      `bus benchmark: ${o.calls} calls @${o.rate}/s, ${o.inflight} in flight for ${o.seconds} s, fan-out ${o.messages} msgs @${o.msgRate}/s to ${o.subscribers} subscribers`,
    );
    if (o.only.has('bus')) {
      bus = await openBus(store, { logger: quiet });
      await spawnPeer(['bus-server', '--store', serve.url]);
      const b = bus;
      await rpcSide('muster bus', (i) => b.call('bench', 'echo', payload(i)), o);
      const subs = await Promise.all(
        Array.from({ length: o.subscribers }, () => spawnPeer(['bus-sub', '--store', serve.url])),
      );
      const view = await b.instances('topic.fanout');
      while (view.size < o.subscribers) await new Promise((r) => setTimeout(r, 20));
      await fanOut('muster bus', subs, (body) => b.publish('fanout', body), o);
      if (o.stall) {
        const again = await Promise.all(
          Array.from({ length: o.subscribers }, () =>
            spawnPeer(['bus-sub', '--store', serve.url, '--topic', 'fanout2']),
          ),
        );
        const v2 = await b.instances('topic.fanout2');
        while (v2.size < o.subscribers) await new Promise((r) => setTimeout(r, 20));
        await fanOut('muster bus', again, (body) => b.publish('fanout2', body), o, true);
      }
    }
    if (o.only.has('nats')) {
      const binary = findBinary('nats-server');
      if (binary === undefined) console.log('nats: skipped (apt-get install nats-server)');
      else {
        const port = await freePort();
        nats = spawn(binary, ['-a', '127.0.0.1', '-p', String(port)], { stdio: 'ignore' });
        children.add(nats);
        const url = `nats://127.0.0.1:${port}`;
        for (let i = 0; ; i++) {
          try {
            nc = await natsConnect({ servers: url });
            break;
          } catch (err) {
            if (i > 100) throw err;
            await new Promise((r) => setTimeout(r, 50));
          }
        }
        await spawnPeer(['nats-server', '--nats', url]);
        const c = nc;
        await rpcSide(
          'nats',
          (i) => c.request('bench.echo', Buffer.from(JSON.stringify(payload(i))), { timeout: 5000 }),
          o,
        );
        const subs = await Promise.all(
          Array.from({ length: o.subscribers }, () => spawnPeer(['nats-sub', '--nats', url])),
        );
        await fanOut(
          'nats',
          subs,
          async (body) => {
            c.publish('fanout', Buffer.from(JSON.stringify(body)));
          },
          o,
        );
      }
    }
    if (o.only.has('grpc')) {
      const peer = await spawnPeer(['grpc-server']);
      const Client = grpc.makeGenericClientConstructor(ECHO_SERVICE, 'Bench');
      const client = new Client(
        peer.ready.address as string,
        grpc.credentials.createInsecure(),
      ) as unknown as {
        echo(req: Buffer, cb: (err: Error | null, res: Buffer) => void): void;
        close(): void;
      };
      await rpcSide(
        'grpc-js',
        (i) =>
          new Promise((resolve, reject) =>
            client.echo(Buffer.from(JSON.stringify(payload(i))), (err, res) =>
              err ? reject(err) : resolve(JSON.parse(res.toString('utf8'))),
            ),
          ),
        o,
      );
      client.close();
    }
  } finally {
    await nc?.close();
    await bus?.close();
    for (const c of children) c.kill('SIGKILL');
    await store.close();
    await serve.close();
  }
}
