/**
 * `npm run bench -- etcd [--url etcd://…] [--ops N] [--watchers W]`: the etcd engine on a local
 * single-member etcd (started from PATH unless `--url` is given).
 *
 * Prints p50/p99 of sequential put, txn and linearizable get, side by side with the same calls
 * made through the raw `etcd3` client (alternating blocks, so machine noise hits both alike); the
 * delay from a put to its watch event; and fan-out: one put seen by W watches (each its own gRPC
 * stream, all in this one process).
 */
import { Etcd3 } from 'etcd3';
import { openEtcdStore } from '../src/store/etcd/index.js';
import type { EtcdStore } from '../src/store/etcd/index.js';
import type { Store, Watch } from '../src/store/types.js';
import { startEtcd, type EtcdCluster } from '../src/testing/index.js';
import { arg, latencySummary, quantile, timed } from './stats.js';

/** Runs `engine` and `raw` in alternating blocks of `block` calls; returns both latency lists. */
async function sideBySide(
  n: number,
  engine: (i: number) => Promise<unknown>,
  raw: (i: number) => Promise<unknown>,
  block = 100,
): Promise<{ engine: number[]; raw: number[] }> {
  const out = { engine: [] as number[], raw: [] as number[] };
  for (let start = 0; start < n; start += block) {
    for (let i = start; i < Math.min(n, start + block); i++) out.engine.push(await timed(() => engine(i)));
    for (let i = start; i < Math.min(n, start + block); i++) out.raw.push(await timed(() => raw(i)));
  }
  return out;
}

function report(what: string, r: { engine: number[]; raw: number[] }): void {
  const e50 = quantile(r.engine, 0.5);
  const r50 = quantile(r.raw, 0.5);
  console.log(`${what.padEnd(22)} engine ${latencySummary(r.engine)}`);
  console.log(`${''.padEnd(22)} etcd3  ${latencySummary(r.raw)}`);
  console.log(`${''.padEnd(22)} engine overhead at p50: ${(((e50 - r50) / r50) * 100).toFixed(1)}%`);
}

/** Put → watcher delay: `n` puts, one at a time, each timed until `watch` yields it. */
export async function watchDelay(writer: Store, watch: Watch, prefix: string, n: number): Promise<number[]> {
  const it = watch[Symbol.asyncIterator]();
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    const { revision } = await writer.put(`${prefix}k`, String(i));
    for (;;) {
      const r = await it.next();
      if (r.done === true) throw new Error('watch ended');
      if (r.value.type === 'events' && r.value.revision >= revision) break;
    }
    out.push(performance.now() - t0);
  }
  return out;
}

async function rawWatchDelay(client: Etcd3, key: string, n: number): Promise<number[]> {
  const watcher = await client.watch().key(key).create();
  let waiting: ((rev: number) => void) | undefined;
  watcher.on('put', (kv) => waiting?.(Number(kv.mod_revision)));
  const out: number[] = [];
  try {
    for (let i = 0; i < n; i++) {
      const t0 = performance.now();
      const seen = new Promise<number>((resolve) => (waiting = resolve));
      await client.put(key).value(String(i));
      await seen;
      out.push(performance.now() - t0);
    }
  } finally {
    await watcher.cancel();
  }
  return out;
}

/** One put, W watches: per watcher delay, and the delay until the last of them has it. */
async function fanOut(
  writer: EtcdStore,
  reader: EtcdStore,
  prefix: string,
  watchers: number,
  rounds: number,
): Promise<{ each: number[]; last: number[] }> {
  const from = (await writer.headRevision()) + 1;
  const watches = Array.from({ length: watchers }, () => reader.watch(prefix, { fromRevision: from }));
  const iterators = watches.map((w) => w[Symbol.asyncIterator]());
  const each: number[] = [];
  const last: number[] = [];
  try {
    for (let round = -3; round < rounds; round++) {
      const t0 = performance.now();
      const { revision } = await writer.put(`${prefix}k`, String(round));
      const times = await Promise.all(
        iterators.map(async (it) => {
          for (;;) {
            const r = await it.next();
            if (r.done === true) throw new Error('watch ended');
            if (r.value.type === 'events' && r.value.revision >= revision) return performance.now() - t0;
          }
        }),
      );
      if (round < 0) continue; // warm-up: streams set up, JIT warm
      each.push(...times);
      last.push(Math.max(...times));
    }
  } finally {
    for (const w of watches) w.close();
  }
  return { each, last };
}

export async function run(args: string[]): Promise<void> {
  const ops = Number(arg(args, '--ops')) || 1000;
  const watchers = Number(arg(args, '--watchers')) || 150;
  let cluster: EtcdCluster | undefined;
  let url = arg(args, '--url');
  if (url === undefined) {
    cluster = await startEtcd({ members: 1 });
    url = cluster.url;
  }
  const endpoints = url.replace(/^etcds?:\/\//, '').split(',');
  const store = openEtcdStore(url, { keyPrefix: '/bench/' });
  const other = openEtcdStore(url, { keyPrefix: '/bench/' });
  const raw = new Etcd3({ hosts: endpoints.map((h) => `http://${h}`) });
  const value = 'x'.repeat(64);
  try {
    console.log(`etcd engine benchmark: ${url}, ${ops} ops per figure, sequential, one client`);
    await store.put('warm', value);
    await raw.put('/bench/warm').value(value);

    report(
      'put',
      await sideBySide(
        ops,
        (i) => store.put(`p/${i % 100}`, value),
        (i) =>
          raw
            .put(`/bench/p/${i % 100}`)
            .value(value)
            .exec(),
      ),
    );
    report(
      'txn (compare + put)',
      await sideBySide(
        ops,
        (i) =>
          store.txn(
            [{ key: `t/${i % 100}`, target: 'version', op: '>', value: -1 }],
            [{ type: 'put', key: `t/${i % 100}`, value }],
          ),
        (i) =>
          raw
            .if(`/bench/t/${i % 100}`, 'Version', '>', -1)
            .then(raw.put(`/bench/t/${i % 100}`).value(value))
            .commit(),
      ),
    );
    report(
      'get (linearizable)',
      await sideBySide(
        ops,
        (i) => store.get(`p/${i % 100}`),
        (i) => raw.get(`/bench/p/${i % 100}`).buffer(),
      ),
    );

    const w = other.watch('wd/', { fromRevision: (await store.headRevision()) + 1 });
    const delays = await watchDelay(store, w, 'wd/', Math.min(ops, 500));
    w.close();
    const rawDelays = await rawWatchDelay(raw, '/bench/rwd/k', Math.min(ops, 500));
    console.log(`${'put → watcher'.padEnd(22)} engine ${latencySummary(delays)}`);
    console.log(`${''.padEnd(22)} etcd3  ${latencySummary(rawDelays)}`);

    const fan = await fanOut(store, other, 'fan/', watchers, 30);
    console.log(`${`put → ${watchers} watches`.padEnd(22)} each   ${latencySummary(fan.each)}`);
    console.log(`${''.padEnd(22)} last   ${latencySummary(fan.last)}`);
  } finally {
    raw.close();
    await store.close();
    await other.close();
    await cluster?.close();
  }
}
