/**
 * The far side of `npm run bench -- bus`, one process per peer:
 * `node bus-peer.js ROLE [--store URL] [--nats URL] [--topic T]`
 * - `bus-server`: serves `bench.echo` on the muster bus.
 * - `nats-server`: answers requests on subject `bench.echo` through nats-server.
 * - `grpc-server`: a grpc-js unary echo (JSON bytes in, the same bytes out).
 * - `bus-sub` / `nats-sub`: subscribes to the topic and records, per message, the delay from the
 *   publisher's send time (`hostWallMs`, comparable across processes) to delivery.
 * - `bare-server`: a bare length-prefixed echo on `net` (`| length: u32 BE | id: u32 BE | bytes |`,
 *   replied as `| length | id | handler time | scheduler wait | time on a CPU (f64 BE each) | bytes |`),
 *   the floor `bus-tail` compares with.
 * With `--stamp` (`bus-server`), the handler adds `h`, the host's monotonic time when it ran, `w`,
 * its thread's scheduler wait so far, and `u`, its time on a CPU so far (ms), to the echoed message; `bus-server --stamp` and `bare-server` also record their GC pauses (start on the
 * host's monotonic clock, duration, kind) and print them with the delays on SIGTERM.
 * Prints `{"ready":true,…}` once serving; subscribers print `{"delays":[…]}` on SIGTERM, then exit.
 */
import * as grpc from '@grpc/grpc-js';
import { createServer, type Socket } from 'node:net';
import { PerformanceObserver } from 'node:perf_hooks';
import { connect as natsConnect } from 'nats';
import { openBus } from '../src/bus/index.js';
import { openStore } from '../src/store/index.js';
import { hostMonotonicMs } from '../src/util/host-clock.js';
import { ECHO_SERVICE } from './bus-grpc.js';
import { schedReader } from './bus-sched.js';

const [role, ...rest] = process.argv.slice(2);
const opt = (name: string): string | undefined => {
  const i = rest.indexOf(name);
  return i >= 0 ? rest[i + 1] : undefined;
};
const out = (o: unknown): void => {
  process.stdout.write(`${JSON.stringify(o)}\n`);
};
const quiet = { info: () => undefined, warn: () => undefined, error: () => undefined };
const topic = opt('--topic') ?? 'fanout';
const delays: number[] = [];
/** GC pauses as `[start (host monotonic ms), duration ms, kind]`, with `--stamp` / `bare-server`. */
const gc: number[][] = [];
const report = (): void => {
  process.stdout.write(`${JSON.stringify({ delays, gc })}\n`, () => process.exit(0));
};

/** Records every GC pause of this process on the host's monotonic clock. */
function recordGc(): void {
  const offset = hostMonotonicMs() - performance.now();
  new PerformanceObserver((list) => {
    for (const e of list.getEntries())
      gc.push([e.startTime + offset, e.duration, (e as { detail?: { kind?: number } }).detail?.kind ?? 0]);
  }).observe({ entryTypes: ['gc'] });
}

/** The bare echo: frames parsed in place, an incomplete one kept until the rest arrives. */
function bareEcho(socket: Socket): void {
  socket.setNoDelay(true);
  const sched = schedReader();
  let pending: Buffer | undefined;
  socket.on('data', (chunk: Buffer) => {
    const buf = pending === undefined ? chunk : Buffer.concat([pending, chunk]);
    pending = undefined;
    let off = 0;
    while (buf.length - off >= 4) {
      const len = buf.readUInt32BE(off);
      if (buf.length - off < 4 + len) break;
      const h = hostMonotonicMs();
      const s = sched.read();
      const reply = Buffer.allocUnsafe(4 + len + 24);
      reply.writeUInt32BE(len + 24, 0);
      buf.copy(reply, 4, off + 4, off + 8);
      reply.writeDoubleBE(h, 8);
      reply.writeDoubleBE(s[1] as number, 16);
      reply.writeDoubleBE(s[0] as number, 24);
      buf.copy(reply, 32, off + 8, off + 4 + len);
      socket.write(reply);
      off += 4 + len;
    }
    if (off < buf.length) pending = buf.subarray(off);
  });
}
process.on('SIGTERM', report);

switch (role) {
  case 'bus-server': {
    const bus = await openBus(await openStore(opt('--store') as string), { logger: quiet });
    if (rest.includes('--stamp')) {
      recordGc();
      const sched = schedReader();
      await bus.serve('bench', {
        echo: (m) => {
          const s = sched.read();
          const r = m as { h?: number; w?: number; u?: number };
          r.h = hostMonotonicMs();
          r.w = s[1];
          r.u = s[0];
          return m;
        },
      });
    } else await bus.serve('bench', { echo: (m) => m });
    out({ ready: true, address: bus.address, pid: process.pid });
    break;
  }
  case 'bare-server': {
    recordGc();
    const server = createServer(bareEcho);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const a = server.address() as { port: number };
    out({ ready: true, address: `127.0.0.1:${a.port}`, pid: process.pid });
    break;
  }
  case 'bus-sub': {
    const bus = await openBus(await openStore(opt('--store') as string), { logger: quiet });
    await bus.subscribe(topic, (m) => {
      const { t, i } = m as { t: number; i: number };
      if (i >= 0) delays.push(hostMonotonicMs() - t);
    });
    out({ ready: true, address: bus.address });
    break;
  }
  case 'nats-server': {
    const nc = await natsConnect({ servers: opt('--nats') as string });
    nc.subscribe('bench.echo', { callback: (_err, msg) => msg.respond(msg.data) });
    await nc.flush();
    out({ ready: true });
    break;
  }
  case 'nats-sub': {
    const nc = await natsConnect({ servers: opt('--nats') as string });
    nc.subscribe(topic, {
      callback: (_err, msg) => {
        const m = JSON.parse(Buffer.from(msg.data).toString('utf8')) as { t: number; i: number };
        if (m.i >= 0) delays.push(hostMonotonicMs() - m.t);
      },
    });
    await nc.flush();
    out({ ready: true });
    break;
  }
  case 'grpc-server': {
    const server = new grpc.Server();
    server.addService(ECHO_SERVICE, {
      echo: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) =>
        cb(null, call.request),
    });
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) =>
        err ? reject(err) : resolve(p),
      ),
    );
    out({ ready: true, address: `127.0.0.1:${port}` });
    break;
  }
  default:
    process.stderr.write(`unknown role ${String(role)}\n`);
    process.exit(2);
}
