/**
 * `npm run bench -- config-floor [--workers 150] [--rounds 8]`
 *
 * What this machine allows before muster does anything: the same number of *minimal* Node processes
 * as the config benchmark, each doing nothing but the measured step, so the config figures can be
 * read against a floor.
 * - push: one parent writes one JSON line to every child's Unix socket; a child notes the receipt
 *   (the last hop of propagation, without a relay, a store or a configuration handle);
 * - instant: every child blocks on a futex until one common instant and notes how late it woke
 *   (the punctual `switch` event, without a handle).
 * Round 0 of each is a warm-up and is not counted.
 */
import { fork } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { PreciseClock } from '../src/demo/precise-clock.js';
import { arg, latencySummary } from './stats.js';

const precise = new PreciseClock();
const now = (): number => precise.now();

type Msg = { t: 'push'; at: number } | { t: 'instant'; at: number } | { t: 'done' };

function child(path: string): void {
  const cell = new Int32Array(new SharedArrayBuffer(4));
  const pushes: number[] = [];
  const instants: number[] = [];
  const socket = connect(path);
  let buf = '';
  socket.on('data', (chunk) => {
    const t = now();
    buf += chunk.toString();
    for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
      const m = JSON.parse(buf.slice(0, i)) as Msg;
      buf = buf.slice(i + 1);
      if (m.t === 'push') pushes.push(t - m.at);
      else if (m.t === 'instant') {
        const at = m.at;
        setTimeout(
          () => {
            const left = at - now();
            if (left > 0) Atomics.wait(cell, 0, 0, left);
            instants.push(now() - at);
          },
          Math.max(0, at - now() - 25),
        );
      } else {
        process.send?.({ pushes, instants }, () => process.exit(0));
      }
    }
  });
}

export async function run(args: string[]): Promise<void> {
  const workers = Number(arg(args, '--workers') ?? '150');
  const rounds = Number(arg(args, '--rounds') ?? '8');
  const dir = mkdtempSync(join(tmpdir(), 'muster-floor-'));
  const path = join(dir, 'floor.sock');
  const sockets: Socket[] = [];
  const server = createServer((s) => {
    s.setNoDelay(true);
    sockets.push(s);
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  const children = Array.from({ length: workers }, () =>
    fork(new URL(import.meta.url), ['--floor-child', path], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    }),
  );
  try {
    while (sockets.length < workers) await sleep(50);
    await sleep(3000); // start-up drains
    const send = (m: Msg): void => {
      const line = `${JSON.stringify(m)}\n`;
      for (const s of sockets) s.write(line);
    };
    for (let r = 0; r <= rounds; r++) {
      send({ t: 'push', at: now() });
      await sleep(600);
      send({ t: 'instant', at: now() + 500 });
      await sleep(1100);
    }
    const results = children.map(
      (c) => new Promise<{ pushes: number[]; instants: number[] }>((resolve) => c.once('message', resolve)),
    );
    send({ t: 'done' });
    const r = await Promise.all(results);
    console.log(`config floor: ${workers} minimal Node processes, ${rounds} rounds (after one warm-up)`);
    console.log(
      `  push to every process (one parent, Unix sockets): ${latencySummary(r.flatMap((x) => x.pushes.slice(1)))}`,
    );
    console.log(
      `  wake at one instant (futex, 25 ms early):        ${latencySummary(r.flatMap((x) => x.instants.slice(1)))}`,
    );
  } finally {
    for (const c of children) c.kill();
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[2] === '--floor-child') child(process.argv[3] as string);
