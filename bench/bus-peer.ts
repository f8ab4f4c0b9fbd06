/**
 * The far side of `npm run bench -- bus`, one process per peer:
 * `node bus-peer.js ROLE [--store URL] [--nats URL] [--topic T]`
 * - `bus-server`: serves `bench.echo` on the muster bus.
 * - `nats-server`: answers requests on subject `bench.echo` through nats-server.
 * - `grpc-server`: a grpc-js unary echo (JSON bytes in, the same bytes out).
 * - `bus-sub` / `nats-sub`: subscribes to the topic and records, per message, the delay from the
 *   publisher's send time (`hostWallMs`, comparable across processes) to delivery.
 * Prints `{"ready":true,…}` once serving; subscribers print `{"delays":[…]}` on SIGTERM, then exit.
 */
import * as grpc from '@grpc/grpc-js';
import { connect as natsConnect } from 'nats';
import { openBus } from '../src/bus/index.js';
import { openStore } from '../src/store/index.js';
import { hostMonotonicMs } from '../src/util/host-clock.js';
import { ECHO_SERVICE } from './bus-grpc.js';

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
const report = (): void => {
  process.stdout.write(`${JSON.stringify({ delays })}\n`, () => process.exit(0));
};
process.on('SIGTERM', report);

switch (role) {
  case 'bus-server': {
    const bus = await openBus(await openStore(opt('--store') as string), { logger: quiet });
    await bus.serve('bench', { echo: (m) => m });
    out({ ready: true, address: bus.address });
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
