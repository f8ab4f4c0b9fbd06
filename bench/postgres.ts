/**
 * `npm run bench -- postgres [--url postgres://…] [--ops N] [--inflight 64]`: the PostgreSQL engine
 * on a local server (started by the test harness unless `--url` is given).
 *
 * Prints p50/p99 of sequential put, txn and get; puts/s with `--inflight` writers; put → watch
 * delay; lease expiry → deletion seen by a watcher; and the cost of the gap-free revision: the same
 * write with the revision from a SEQUENCE (gaps, numbers out of commit order) at 1 and at
 * `--inflight` writers, against the engine's locked counter.
 */
import { openPostgresStore, type PostgresStore, sequenceBaseline } from '../src/store/postgres/index.js';
import { startPostgres, type PostgresServer } from '../src/testing/index.js';
import { arg, latencySummary, rate, timed } from './stats.js';

async function sequential(n: number, fn: (i: number) => Promise<unknown>): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push(await timed(() => fn(i)));
  return out;
}

async function concurrentPuts(store: PostgresStore, ops: number, inflight: number): Promise<number> {
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: inflight }, async () => {
      for (let i = next++; i < ops; i = next++) await store.put(`/bench/c/${i % 1000}`, String(i));
    }),
  );
  return performance.now() - t0;
}

export async function run(args: string[]): Promise<void> {
  const ops = Number(arg(args, '--ops') ?? 2000);
  const inflight = Number(arg(args, '--inflight') ?? 64);
  let server: PostgresServer | undefined;
  let url = arg(args, '--url');
  if (url === undefined) {
    server = await startPostgres();
    url = await server.createDatabase();
  }
  const store = await openPostgresStore(url, { poolMax: Math.max(10, inflight) });
  try {
    console.log(`postgres engine, ${ops} ops, ${inflight} in flight`);
    console.log(
      `put (sequential)       ${latencySummary(await sequential(ops, (i) => store.put(`/bench/s/${i % 100}`, String(i))))}`,
    );
    console.log(
      `txn (sequential)       ${latencySummary(
        await sequential(ops, (i) =>
          store.txn(
            [{ key: `/bench/s/${i % 100}`, target: 'version', op: '>', value: 0 }],
            [{ type: 'put', key: `/bench/t/${i % 100}`, value: 'x' }],
          ),
        ),
      )}`,
    );
    console.log(
      `get (sequential)       ${latencySummary(await sequential(ops, (i) => store.get(`/bench/s/${i % 100}`)))}`,
    );
    const ms = await concurrentPuts(store, ops, inflight);
    console.log(`puts, ${inflight} in flight     ${rate(ops, ms)}`);
    const single = await concurrentPuts(store, Math.min(ops, 500), 1);
    console.log(`puts, 1 in flight      ${rate(Math.min(ops, 500), single)}`);
    const seqMany = await sequenceBaseline(url, ops, inflight);
    const seqOne = await sequenceBaseline(url, Math.min(ops, 500), 1);
    console.log(
      `SEQUENCE baseline      ${rate(ops, seqMany)} at ${inflight} in flight, ${rate(Math.min(ops, 500), seqOne)} at 1`,
    );
    console.log(`counter cost at ${inflight} in flight: ${(ms / seqMany).toFixed(2)}× the sequence's time`);

    // put → watch delay
    const watch = store.watch('/bench/w/');
    const it = watch[Symbol.asyncIterator]();
    const delays: number[] = [];
    for (let i = 0; i < Math.min(ops, 500); i++) {
      const t0 = performance.now();
      const { revision } = await store.put('/bench/w/k', String(i));
      for (;;) {
        const r = await it.next();
        if (r.done === true) throw new Error('watch ended');
        if (r.value.type === 'events' && r.value.revision >= revision) break;
      }
      delays.push(performance.now() - t0);
    }
    watch.close();
    console.log(`put → watch            ${latencySummary(delays)}`);

    // lease expiry → deletion seen
    const lease = await store.grantLease(1);
    await store.put('/bench/l/k', 'x', { lease: lease.id });
    const lw = store.watch('/bench/l/');
    const t0 = performance.now();
    for await (const b of lw) if (b.type === 'events' && b.events.some((e) => e.type === 'delete')) break;
    console.log(`lease (TTL 1 s) expiry seen after ${(performance.now() - t0).toFixed(0)} ms`);
  } finally {
    await store.close();
    await server?.close();
  }
}
