/**
 * `npm run bench -- bus-tail [--calls N] [--rounds R] [--rate Q] [--peers bus,bare] [--modes spin,timer]
 * [--slow MS] [--cpu-prof DIR] [--server-node-args A,B]`: where the RPC tail of `npm run bench -- bus` comes from — attributed call by call, so
 * that it works on a noisy machine too (docs/bus.md, "The RPC tail: where it comes from").
 *
 * Processes as in `bench -- bus`: the store (`muster serve`), a bus server (`bus-peer bus-server
 * --stamp`), and this process as the client; plus a bare framed echo on `net` (`bus-peer
 * bare-server`), the floor. Blocks of N calls (default 5,000) at Q calls/s (default 5,000), open loop,
 * alternate between the peers and between two generators, R rounds (default 4):
 * - `spin`: `bench -- bus`'s generator before session 7 — it polls with `setImmediate` whenever the
 *   next call is due within 2 ms, i.e. always at 5k calls/s: this process takes a whole core;
 * - `timer`: sleeps on a timer until the next call is due (timers have 1 ms resolution, so at 5k/s it
 *   sends the ~5 calls that came due at each wake-up), the way a client that has other work does.
 *
 * Per call: sent (client), handler ran (server; the handler stamps the host's monotonic time into
 * the reply), reply received (client) — `process.hrtime` is CLOCK_MONOTONIC, one clock for every
 * process on the host. GC pauses of the client and both servers are recorded on the same clock.
 * The server's handler also reports its thread's time on a CPU and waiting for one so far
 * (`/proc/thread-self/schedstat`), and the client reads its own at each reply. A call slower than
 * `--slow` (default 1 ms) is attributed to: the generator sending it late, else its slower leg —
 * request (send → handler) or response (handler → received) — and in that leg, first that applies:
 * the process that had to act waited for a CPU for half of the leg or more, a GC pause of it
 * overlapped the leg, it was on a CPU for half of the leg or more (busy: earlier calls, other work),
 * or none of these ("other": e.g. the kernel's loopback delivery). Per peer and generator it prints p50/p99, the
 * slow calls by cause, and for each process the scheduler's run and wait time per second
 * (`/proc/PID/task/TID/schedstat`: time on a CPU, time runnable but waiting for one), main thread and
 * the other threads (V8's GC and compiler helpers, libuv) apart, and the machine's busy CPU share.
 *
 * `--cpu-prof DIR`: the two servers write CPU profiles (100 µs sampling) into DIR;
 * `--server-node-args A,B`: more Node options for the two servers (e.g. `--log-deopt,--logfile=F`).
 *
 * Direction only on a shared machine: compare rows of one run, not runs.
 */
import { connect, type Socket } from 'node:net';
import { PerformanceObserver } from 'node:perf_hooks';
import { openBus, type Bus } from '../src/bus/index.js';
import { openStore } from '../src/store/index.js';
import { hostMonotonicMs } from '../src/util/host-clock.js';
import { children, spawnPeer, startServeProcess } from './bus.js';
import { paced } from './bus-pacer.js';
import { readCpu, readSched, schedDelta, schedReader, type Sched } from './bus-sched.js';
import { arg, fmt, quantile } from './stats.js';

const quiet = { info: () => undefined, warn: () => undefined, error: () => undefined };

/** What a call returns: the handler's time (host monotonic ms), its thread's wait for and time on a CPU so far (ms). */
interface Stamp {
  h: number;
  w: number;
  u: number;
}
type Call = (i: number) => Promise<Stamp>;
type Mode = 'spin' | 'timer' | 'paced';

interface Block {
  readonly send: Float64Array;
  readonly handler: Float64Array;
  readonly recv: Float64Array;
  readonly late: Float64Array;
  /** The server's scheduler wait so far, when the handler ran; the client's, when the reply came. */
  readonly srvWait: Float64Array;
  readonly cliWait: Float64Array;
  /** The same for time on a CPU. */
  readonly srvRun: Float64Array;
  readonly cliRun: Float64Array;
}

const clientSched = schedReader();

/** Open loop at `rate`: call i is due at i/rate; latency from the actual send. */
function openLoop(call: Call, n: number, rate: number, mode: Mode): Promise<Block> {
  const b: Block = {
    send: new Float64Array(n),
    handler: new Float64Array(n),
    recv: new Float64Array(n),
    late: new Float64Array(n),
    srvWait: new Float64Array(n),
    cliWait: new Float64Array(n),
    srvRun: new Float64Array(n),
    cliRun: new Float64Array(n),
  };
  const interval = 1000 / rate;
  const t0 = hostMonotonicMs();
  let i = 0;
  let done = 0;
  return new Promise((resolve, reject) => {
    const send = (k: number, at = t0 + k * interval): void => {
      const now = hostMonotonicMs();
      b.send[k] = now;
      b.late[k] = now - at;
      call(k).then((r) => {
        b.recv[k] = hostMonotonicMs();
        const c = clientSched.read();
        b.cliWait[k] = c[1] as number;
        b.cliRun[k] = c[0] as number;
        b.handler[k] = r.h;
        b.srvWait[k] = r.w;
        b.srvRun[k] = r.u;
        if (++done === n) resolve(b);
      }, reject);
    };
    const tick = (): void => {
      const now = hostMonotonicMs();
      while (i < n && t0 + i * interval <= now) send(i++);
      if (i >= n) return;
      const wait = t0 + i * interval - hostMonotonicMs();
      if (mode === 'timer') setTimeout(tick, Math.max(0, wait));
      else if (wait > 2) setTimeout(tick, wait - 1);
      else setImmediate(tick);
    };
    if (mode === 'paced') paced(n, rate, send).catch(reject);
    else tick();
  });
}

/** The bare framed client: `| length | id | bytes |` out, `| length | id | f64 stamp | bytes |` back. */
function bareClient(address: string): Promise<{ call: Call; close(): void }> {
  const [host, port] = address.split(':') as [string, string];
  return new Promise((resolve, reject) => {
    const socket: Socket = connect(Number(port), host, () => {
      socket.setNoDelay(true);
      const waiting: ((r: Stamp) => void)[] = new Array<never>(65536);
      let nextId = 0;
      let pending: Buffer | undefined;
      socket.on('data', (chunk: Buffer) => {
        const buf = pending === undefined ? chunk : Buffer.concat([pending, chunk]);
        pending = undefined;
        let off = 0;
        while (buf.length - off >= 4) {
          const len = buf.readUInt32BE(off);
          if (buf.length - off < 4 + len) break;
          const id = buf.readUInt32BE(off + 4);
          const h = buf.readDoubleBE(off + 8);
          const w = buf.readDoubleBE(off + 16);
          const u = buf.readDoubleBE(off + 24);
          JSON.parse(buf.toString('utf8', off + 32, off + 4 + len));
          waiting[id]?.({ h, w, u });
          off += 4 + len;
        }
        if (off < buf.length) pending = buf.subarray(off);
      });
      resolve({
        call: (i) =>
          new Promise<Stamp>((res) => {
            const id = nextId;
            nextId = (nextId + 1) & 0xffff;
            waiting[id] = res;
            const body = Buffer.from(JSON.stringify(payload(i)));
            const frame = Buffer.allocUnsafe(8 + body.length);
            frame.writeUInt32BE(4 + body.length, 0);
            frame.writeUInt32BE(id, 4);
            body.copy(frame, 8);
            socket.write(frame);
          }),
        close: () => socket.destroy(),
      });
    });
    socket.once('error', reject);
  });
}

function payload(i: number): { i: number; pad: string } {
  return { i, pad: 'x'.repeat(100) };
}

interface Acc {
  lat: number[];
  late: number[];
  causes: Map<string, number>;
  /** ms of the slow calls' latency above the threshold, by cause. */
  excess: Map<string, number>;
  /** per process: `schedDelta`'s six figures, summed over the blocks. */
  sched: Map<string, number[]>;
  seconds: number;
  busy: number;
  total: number;
  /** per process: [pauses, total ms, longest ms]. */
  gc: Map<string, [number, number, number]>;
}

/** `schedDelta`'s figures per second of `seconds`. */
function describeSched(d: number[], seconds: number): string {
  const ms = (i: number): string => `${fmt((d[i] as number) / 1e6 / seconds, 1)} ms/s`;
  const per = (i: number): string => fmt((d[i] as number) / seconds, 0);
  return `main thread: on CPU ${ms(0)}, waiting ${ms(1)}, ran ${per(2)}×/s; other threads: on CPU ${ms(3)}, waiting ${ms(4)}, ran ${per(5)}×/s`;
}

function overlaps(gc: number[][], from: number, to: number): boolean {
  for (const [start, dur] of gc)
    if ((start as number) < to && (start as number) + (dur as number) > from) return true;
  return false;
}

export async function run(args: string[]): Promise<void> {
  const n = Number(arg(args, '--calls') ?? 5000);
  const rounds = Number(arg(args, '--rounds') ?? 4);
  const rate = Number(arg(args, '--rate') ?? 5000);
  const slow = Number(arg(args, '--slow') ?? 1);
  const peers = (arg(args, '--peers') ?? 'bus,bare').split(',');
  const modes = (arg(args, '--modes') ?? 'spin,timer,paced').split(',') as Mode[];
  const serve = await startServeProcess();
  const servePid = [...children].at(-1)?.pid as number;
  const store = await openStore(serve.url);
  let bus: Bus | undefined;
  let bare: { call: Call; close(): void } | undefined;
  const clientGc: number[][] = [];
  const offset = hostMonotonicMs() - performance.now();
  const obs = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) clientGc.push([e.startTime + offset, e.duration]);
  });
  obs.observe({ entryTypes: ['gc'] });
  try {
    bus = await openBus(store, { logger: quiet });
    const prof = arg(args, '--cpu-prof');
    const nodeArgs = [
      ...(prof === undefined ? [] : ['--cpu-prof', '--cpu-prof-interval', '100', '--cpu-prof-dir', prof]),
      ...(arg(args, '--server-node-args')?.split(',') ?? []),
    ];

    const busPeer = await spawnPeer(['bus-server', '--store', serve.url, '--stamp'], nodeArgs);
    const barePeer = await spawnPeer(['bare-server'], nodeArgs);
    bare = await bareClient(barePeer.ready.address as string);
    const b = bus;
    const calls: Record<string, Call> = {
      bus: (i) => b.call('bench', 'echo', payload(i)) as Promise<Stamp>,
      bare: bare.call,
    };
    const pids: Record<string, number> = {
      client: process.pid,
      'bus server': busPeer.proc.pid as number,
      'bare server': barePeer.proc.pid as number,
      store: servePid,
    };
    console.log(
      `bus-tail: ${rounds} rounds × ${peers.join('/')} × ${modes.join('/')} generators, ${n} calls per block @${rate}/s; slow = over ${slow} ms`,
    );
    // Warm-up (JIT, connections), unmeasured.
    for (const p of peers) for (const m of modes) await openLoop(calls[p] as Call, 5000, rate, m);
    // Idle: who wakes up, and how often, when no call is made (timers, keep-alives, watches).
    const idle0 = Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, readSched(pid)]));
    const idleMs = 3000;
    await new Promise((r) => setTimeout(r, idleMs));
    for (const [k, pid] of Object.entries(pids))
      console.log(
        `idle ${k.padEnd(11)} ${describeSched(schedDelta(pid, idle0[k] ?? (new Map() as Sched), readSched(pid)), idleMs / 1000)}`,
      );
    const blocks: {
      peer: string;
      mode: Mode;
      b: Block;
      sched: Map<string, number[]>;
      cpu: [number, number];
      secs: number;
    }[] = [];
    for (let r = 0; r < rounds; r++) {
      for (const p of peers) {
        for (const m of modes) {
          const before = Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, readSched(pid)]));
          const cpu0 = readCpu();
          const t0 = hostMonotonicMs();
          const blk = await openLoop(calls[p] as Call, n, rate, m);
          const secs = (hostMonotonicMs() - t0) / 1000;
          const cpu1 = readCpu();
          const sched = new Map<string, number[]>();
          for (const [k, pid] of Object.entries(pids))
            sched.set(k, schedDelta(pid, before[k] ?? (new Map() as Sched), readSched(pid)));
          blocks.push({ peer: p, mode: m, b: blk, sched, cpu: [cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]], secs });
        }
      }
    }
    busPeer.proc.kill('SIGTERM');
    barePeer.proc.kill('SIGTERM');
    const gcOf: Record<string, number[][]> = {
      bus: ((await busPeer.last).gc as number[][] | undefined) ?? [],
      bare: ((await barePeer.last).gc as number[][] | undefined) ?? [],
    };
    const accs = new Map<string, Acc>();
    for (const { peer, mode, b: blk, sched, cpu, secs } of blocks) {
      const key = `${peer.padEnd(4)} ${mode.padEnd(5)}`;
      let a = accs.get(key);
      if (a === undefined) {
        a = {
          lat: [],
          late: [],
          causes: new Map(),
          excess: new Map(),
          sched: new Map(),
          seconds: 0,
          busy: 0,
          total: 0,
          gc: new Map(),
        };
        accs.set(key, a);
      }
      a.seconds += secs;
      a.busy += cpu[0];
      a.total += cpu[1];
      for (const [k, v] of sched) {
        const s = a.sched.get(k) ?? [0, 0, 0, 0, 0, 0];
        for (let j = 0; j < 6; j++) s[j] = (s[j] as number) + (v[j] as number);
        a.sched.set(k, s);
      }
      const serverGc = gcOf[peer] ?? [];
      const first = blk.send[0] as number;
      const last = blk.recv.reduce((x, y) => Math.max(x, y), 0);
      for (const [name, list] of [
        ['client', clientGc],
        ['server', serverGc],
      ] as const) {
        const g = a.gc.get(name) ?? [0, 0, 0];
        for (const [s, d] of list) {
          if ((s as number) < first || (s as number) > last) continue;
          g[0] += 1;
          g[1] += d as number;
          g[2] = Math.max(g[2], d as number);
        }
        a.gc.set(name, g);
      }
      let js = 0;
      let jc = 0;
      let jr = 0;
      for (let k = 0; k < n; k++) {
        const send = blk.send[k] as number;
        const h = blk.handler[k] as number;
        const recv = blk.recv[k] as number;
        const lat = recv - send;
        a.lat.push(lat);
        a.late.push(blk.late[k] as number);
        if (lat <= slow) continue;
        const late = blk.late[k] as number;
        // Scheduler wait that accrued while this call was on its way: the server's since the last
        // call it handled before this one was sent, the client's since the last reply it received
        // before the handler ran (calls are handled and received in order, one connection).
        while (js + 1 < k && (blk.handler[js + 1] as number) <= send) js++;
        while (jc + 1 < k && (blk.recv[jc + 1] as number) <= h) jc++;
        while (jr + 1 < k && (blk.recv[jr + 1] as number) <= send) jr++;
        const sw = k > 0 ? (blk.srvWait[k] as number) - (blk.srvWait[js] as number) : 0;
        const cw = k > 0 ? (blk.cliWait[k] as number) - (blk.cliWait[jc] as number) : 0;
        // The client's, from before this call was sent (it may have waited before its write).
        const cwAll = k > 0 ? (blk.cliWait[k] as number) - (blk.cliWait[jr] as number) : 0;
        // Time on a CPU over the same spans: busy with other calls or other work.
        const sr = k > 0 ? (blk.srvRun[k] as number) - (blk.srvRun[js] as number) : 0;
        const cr = k > 0 ? (blk.cliRun[k] as number) - (blk.cliRun[jc] as number) : 0;
        const crAll = k > 0 ? (blk.cliRun[k] as number) - (blk.cliRun[jr] as number) : 0;
        let cause: string;
        if (late > lat / 2) cause = 'sent late (generator)';
        else if (h - send >= recv - h) {
          if (sw >= (h - send) / 2) cause = 'request leg, server waited for a CPU';
          else if (overlaps(serverGc, send, h)) cause = 'request leg, server GC';
          else if (cwAll - cw >= (h - send) / 2) cause = 'request leg, client waited for a CPU';
          else if (overlaps(clientGc, send, h)) cause = 'request leg, client GC';
          else if (sr >= (h - send) / 2) cause = 'request leg, server busy';
          else if (crAll - cr >= (h - send) / 2) cause = 'request leg, client busy';
          else cause = 'request leg, other';
        } else if (cw >= (recv - h) / 2) cause = 'response leg, client waited for a CPU';
        else if (overlaps(clientGc, h, recv)) cause = 'response leg, client GC';
        else if (overlaps(serverGc, h, recv)) cause = 'response leg, server GC';
        else if (cr >= (recv - h) / 2) cause = 'response leg, client busy';
        else cause = 'response leg, other';
        a.causes.set(cause, (a.causes.get(cause) ?? 0) + 1);
        a.excess.set(cause, (a.excess.get(cause) ?? 0) + lat - slow);
      }
    }
    for (const [key, a] of accs) {
      const slowN = [...a.causes.values()].reduce((x, y) => x + y, 0);
      console.log(
        `${key} p50 ${fmt(quantile(a.lat, 0.5) * 1000, 0)} µs, p99 ${fmt(quantile(a.lat, 0.99) * 1000, 0)} µs, p99.9 ${fmt(quantile(a.lat, 0.999), 2)} ms, max ${fmt(Math.max(...a.lat), 2)} ms; sent late p99 ${fmt(quantile(a.late, 0.99) * 1000, 0)} µs; n=${a.lat.length}; machine busy ${fmt((100 * a.busy) / a.total, 0)} %`,
      );
      console.log(
        `           slow (> ${slow} ms): ${slowN}${[...a.causes]
          .sort((x, y) => y[1] - x[1])
          .map(([c, v]) => `; ${c} ${v} (${fmt(a.excess.get(c) ?? 0, 1)} ms over)`)
          .join('')}`,
      );
      console.log(
        `           GC pauses during the blocks: ${[...a.gc].map(([k, [c, s, m]]) => `${k} ${c} (${fmt(s, 1)} ms, longest ${fmt(m, 2)} ms)`).join(', ')}`,
      );
      for (const [k, d] of a.sched) console.log(`           ${k.padEnd(11)} ${describeSched(d, a.seconds)}`);
    }
  } finally {
    obs.disconnect();
    bare?.close();
    await bus?.close();
    for (const c of children) c.kill('SIGKILL');
    await store.close();
    await serve.close();
  }
}
