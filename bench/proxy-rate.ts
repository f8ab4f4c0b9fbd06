/**
 * The benchmark's constant-arrival-rate load generator (wrk2's model), run as its own process:
 * `node dist/bench/proxy-rate.js URL RATE SECONDS CONNECTIONS`. Request i is due at start + i/RATE;
 * its latency is measured from that due time, not from when it was sent, so a stall of the server
 * shows in the tail instead of silently lowering the rate (coordinated omission). The first second
 * (connections being opened, code being compiled) is sent at the same rate but not counted. Prints one JSON line:
 * `{ sent, ok, errors, p50, p99, p999, max }` (milliseconds).
 */
import { Pool } from 'undici';

const [url, rateArg, secondsArg, connectionsArg] = process.argv.slice(2) as [string, string, string, string];
const rate = Number(rateArg);
const seconds = Number(secondsArg);
const u = new URL(url);
const pool = new Pool(u.origin, { connections: Number(connectionsArg), pipelining: 1 });
/** Requests sent during the first second (warm-up) are not measured. */
const warm = Math.round(rate);
const total = warm + Math.round(rate * seconds);
const latencies = new Float64Array(total);
let sent = 0;
let ok = 0;
let errors = 0;
let done = 0;
const start = performance.now() + 50;

await new Promise<void>((resolve) => {
  const fire = (i: number): void => {
    const due = start + (i * 1000) / rate;
    pool.request({ path: u.pathname, method: 'GET', headers: { 'x-key': 'realm1' } }).then(
      async (r) => {
        await r.body.dump();
        latencies[i] = performance.now() - due;
        if (i >= warm) {
          if (r.statusCode === 200) ok++;
          else errors++;
        }
        if (++done === total) resolve();
      },
      () => {
        latencies[i] = performance.now() - due;
        if (i >= warm) errors++;
        if (++done === total) resolve();
      },
    );
  };
  // a 1 ms tick sends every request that is due (timers are coarse; the due time is what counts)
  const tick = (): void => {
    const now = performance.now();
    while (sent < total && start + (sent * 1000) / rate <= now) fire(sent++);
    if (sent < total) setTimeout(tick, 1);
  };
  setTimeout(tick, 50);
});
await pool.close();
const sorted = Array.from(latencies.subarray(warm)).sort((a, b) => a - b);
const q = (p: number): number => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] ?? NaN;
process.stdout.write(
  `${JSON.stringify({ sent: sent - warm, ok, errors, p50: q(0.5), p99: q(0.99), p999: q(0.999), max: sorted.at(-1) })}\n`,
);
