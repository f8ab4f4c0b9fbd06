/**
 * The etcd engine on a 3-member cluster while members fail: every acknowledged write reaches every
 * watcher exactly once and in order, through a leader kill, a restart and a paused member.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { isRetryable } from '../../src/errors.js';
import { type EtcdStore, openEtcdStore } from '../../src/store/etcd/index.js';
import type { WatchBatch } from '../../src/store/types.js';
import { ETCD_INSTALL_HINT, type EtcdCluster, needBinary, startEtcd } from '../../src/testing/index.js';
import { checkOrder, text, uniquePrefix } from './etcd-helpers.js';

const retries = { count: 0 };

interface Ack {
  readonly key: string;
  readonly value: string;
  readonly revision: number;
}

/** Puts until `count` writes are acknowledged, retrying retryable failures with a fresh value. */
async function writer(
  store: EtcdStore,
  name: string,
  count: number,
  acks: Ack[],
  onAck: (n: number) => void,
): Promise<void> {
  for (let seq = 0; seq < count; seq++) {
    for (let attempt = 0; ; attempt++) {
      const key = `w/${name}/${seq % 5}`;
      const value = `${name}-${seq}-${attempt}`;
      try {
        const { revision } = await store.put(key, value);
        acks.push({ key, value, revision });
        onAck(acks.length);
        break;
      } catch (err) {
        if (!isRetryable(err) || attempt > 200) throw err;
        retries.count++;
        await new Promise((r) => setTimeout(r, 20));
      }
    }
  }
}

async function retry<T>(fn: () => Promise<T>): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      if (!isRetryable(err) || attempt > 20) throw err;
    }
  }
}

/** Collects every batch of a watch until it has seen revision `target()` (polled as it grows). */
async function collect(
  store: EtcdStore,
  prefix: string,
  from: number,
  until: () => number | undefined,
): Promise<WatchBatch[]> {
  const batches: WatchBatch[] = [];
  const w = store.watch(prefix, { fromRevision: from });
  const timer = setTimeout(() => w.close(), 45_000);
  try {
    for await (const b of w) {
      batches.push(b);
      const target = until();
      if (target !== undefined && b.revision >= target) break;
    }
  } finally {
    clearTimeout(timer);
    w.close();
  }
  return batches;
}

describe('etcd engine on a 3-member cluster', { skip: needBinary('etcd', ETCD_INSTALL_HINT) }, () => {
  let cluster: EtcdCluster;
  const stores: EtcdStore[] = [];
  const open = (url: string, prefix: string): EtcdStore => {
    const s = openEtcdStore(url, { keyPrefix: prefix, requestTimeout: '3s' });
    stores.push(s);
    return s;
  };
  before(async () => {
    cluster = await startEtcd({ members: 3 });
  });
  after(async () => {
    await Promise.all(stores.map((s) => s.close()));
    await cluster?.close();
  });

  test('killing the leader loses no acknowledged write and duplicates none, for every watcher', async () => {
    const prefix = uniquePrefix('leader-kill');
    const writers = [open(cluster.url, prefix), open(cluster.url, prefix)];
    const watchers = [0, 1, 2].map(() => open(cluster.url, prefix));
    const from = (await writers[0]!.headRevision()) + 1;

    const acks: Ack[] = [];
    let done = false;
    const target = (): number | undefined => (done ? Math.max(...acks.map((a) => a.revision)) : undefined);
    const collected = watchers.map((s) => collect(s, 'w/', from, target));

    let killed: Promise<void> | undefined;
    let restarted: Promise<void> | undefined;
    const perWriter = 150;
    const onAck = (n: number): void => {
      if (n === 60 && killed === undefined) {
        killed = cluster.leader().then((leader) => leader.kill());
      }
      if (n === 200 && restarted === undefined) {
        restarted = (async () => {
          await killed;
          for (const m of cluster.members) if (!m.running) await m.restart();
        })();
      }
    };
    await Promise.all(writers.map((s, i) => writer(s, `writer${i}`, perWriter, acks, onAck)));
    done = true;
    await killed;
    await restarted;
    // Wake the watchers up in case the last acknowledged revision was their last batch already.
    await writers[0]!.put('w/end', 'end');
    const results = await Promise.all(collected);

    assert.equal(acks.length, 2 * perWriter);
    process.stderr.write(`# leader kill: ${retries.count} writes failed retryably and were retried\n`);
    const byRevision = new Map(acks.map((a) => [a.revision, a]));
    for (const [i, batches] of results.entries()) {
      checkOrder(batches);
      const events = batches.flatMap((b) => (b.type === 'events' ? b.events : []));
      const seen = new Map<string, number>();
      for (const e of events) seen.set(text(e.kv.value), (seen.get(text(e.kv.value)) ?? 0) + 1);
      for (const [value, n] of seen) assert.equal(n, 1, `watcher ${i} saw ${value} ${n} times`);
      for (const a of acks) {
        const e = events.find((x) => x.kv.modRevision === a.revision);
        assert.ok(e !== undefined, `watcher ${i} missed acknowledged write ${a.value} at ${a.revision}`);
        assert.equal(text(e.kv.value), a.value);
        assert.equal(e.kv.key, a.key);
      }
      assert.ok(byRevision.size === acks.length);
    }
    // Every watcher saw the same history.
    const last = Math.max(...acks.map((a) => a.revision));
    const histories = results.map((batches) =>
      batches.flatMap((b) =>
        b.type === 'events' && b.revision <= last
          ? b.events.map((e) => `${e.kv.modRevision}:${text(e.kv.value)}`)
          : [],
      ),
    );
    assert.deepEqual(histories[1], histories[0]);
    assert.deepEqual(histories[2], histories[0]);
  });

  test('the harness pauses, stops and restarts members and finds the leader', async () => {
    const prefix = uniquePrefix('harness');
    const store = openEtcdStore(cluster.url, { keyPrefix: prefix, requestTimeout: '1s' });
    stores.push(store);
    const leader = await cluster.leader();
    const follower = cluster.members.find((m) => m !== leader && m.running)!;
    follower.pause();
    try {
      // A paused member answers nothing: requests sent to it time out (retryably); others succeed.
      await retry(() => store.put('paused', 'one follower paused: quorum holds'));
    } finally {
      follower.resume();
    }
    await follower.stop();
    assert.equal(follower.running, false);
    await retry(() => store.put('stopped', 'one follower stopped'));
    await follower.restart();
    assert.equal(follower.running, true);
    const direct = open(`etcd://${follower.endpoint}`, prefix);
    // A restarted member catches up: a linearizable read through it sees the write made while it was down.
    for (let i = 0; ; i++) {
      try {
        assert.equal(text((await direct.get('stopped'))!.value), 'one follower stopped');
        break;
      } catch (err) {
        if (i > 50) throw err;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    assert.ok(cluster.members.includes(await cluster.leader()));
  });
});
