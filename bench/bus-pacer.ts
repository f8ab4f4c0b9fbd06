/**
 * The open-loop schedule of the bus benchmarks without a spinning event loop.
 *
 * Call i of n is due at t0 + i/rate. Node's timers have 1 ms resolution, so at 5,000 calls/s a
 * generator either sends ~5 calls per timer wake-up (a burst every millisecond) or polls with
 * `setImmediate` between calls — which keeps the measuring process on a CPU 100 % of the time, and
 * on a 2-core machine the server it measures then waits for a CPU (docs/bus.md, "The RPC tail").
 * Here a worker thread sleeps until each due time (`Atomics.wait` with a sub-millisecond timeout: a
 * futex, no CPU while waiting) and posts the index; the main thread's loop sleeps in epoll until the
 * message (or a reply) arrives, as the loop of a service that calls another does.
 */
import { Worker } from 'node:worker_threads';

const WORKER = `
const { parentPort, workerData } = require('node:worker_threads');
const { n, interval } = workerData;
const cell = new Int32Array(new SharedArrayBuffer(4));
const now = () => Number(process.hrtime.bigint()) / 1e6;
const t0 = now() + 1;
parentPort.postMessage(-t0);
for (let i = 0; i < n; i++) {
  const wait = t0 + i * interval - now();
  if (wait > 0) Atomics.wait(cell, 0, 0, wait);
  parentPort.postMessage(i);
}
`;

/**
 * Calls `due(i, at)` for i = 0…n−1, each at (or just after) its due time `at` = t0 + i × 1000/rate
 * on the host's monotonic clock (ms; t0 is when the worker has started); resolves once the last has
 * been called. `due` runs late when this thread is busy: the caller measures from its actual send.
 */
export function paced(n: number, rate: number, due: (i: number, at: number) => void): Promise<void> {
  const interval = 1000 / rate;
  let t0 = 0;
  return new Promise((resolve, reject) => {
    const worker = new Worker(WORKER, { eval: true, workerData: { n, interval } });
    worker.on('message', (i: number) => {
      if (i < 0) {
        t0 = -i;
        return;
      }
      due(i, t0 + i * interval);
      if (i === n - 1) {
        void worker.terminate();
        resolve();
      }
    });
    worker.once('error', reject);
  });
}
