/**
 * Watch history on `muster serve` (issue 13 §2): a watch from revision 1 on a fresh store replays
 * everything; after a restart the compact revision the server reports is one a client can watch
 * from; replayed history arrives in few responses, as etcd batches it. Through the etcd engine and
 * a raw gRPC stream.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { type ClientDuplexStream, credentials, makeGenericClientConstructor, Metadata } from '@grpc/grpc-js';
import { isMusterError } from '../../src/errors.js';
import { etcdServices } from './etcd-proto.js';
import { type MusterServer, startServer } from '../../src/server/index.js';
import { openStore, type Store, type WatchBatch } from '../../src/store/index.js';

type RawStream = ClientDuplexStream<unknown, Record<string, unknown>>;
const cleanups: (() => unknown)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'muster-history-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function rawWatch(server: MusterServer): RawStream {
  const Client = makeGenericClientConstructor(etcdServices().Watch, 'Watch');
  const client = new Client(`${server.host}:${server.port}`, credentials.createInsecure());
  cleanups.push(() => client.close());
  const stream = (client as unknown as { Watch(md: Metadata): RawStream }).Watch(new Metadata());
  stream.on('error', () => undefined);
  return stream;
}

function collect(
  stream: RawStream,
  done: (all: Record<string, unknown>[]) => boolean,
  timeoutMs = 10_000,
): Promise<Record<string, unknown>[]> {
  const all: Record<string, unknown>[] = [];
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out after ${all.length} responses`)), timeoutMs);
    stream.on('data', (r: Record<string, unknown>) => {
      all.push(r);
      if (done(all)) {
        clearTimeout(timer);
        resolve(all);
      }
    });
    stream.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

const eventCount = (all: Record<string, unknown>[]): number =>
  all.reduce((n, r) => n + (Array.isArray(r.events) ? r.events.length : 0), 0);

/** Takes batches from a watch until `n` events arrived (or the watch fails). */
async function takeEvents(store: Store, from: number, n: number): Promise<number[]> {
  const revs: number[] = [];
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(), 10_000);
  try {
    for await (const b of store.watch('/h/', {
      fromRevision: from,
      signal: ac.signal,
    }) as AsyncIterable<WatchBatch>) {
      if (b.type !== 'events') continue;
      for (const _ of b.events) revs.push(b.revision);
      if (revs.length >= n) break;
    }
  } finally {
    clearTimeout(timer);
  }
  return revs;
}

describe('muster serve watch history', () => {
  test(
    'a watch from revision 1 on a fresh store replays every event (raw gRPC and etcd engine)',
    { timeout: 60_000 },
    async () => {
      const server = await startServer({ dataDir: tempDir(), listen: '127.0.0.1:0' });
      cleanups.push(() => server.close());
      const store = await openStore(server.url);
      cleanups.push(() => store.close());
      for (let i = 0; i < 5; i++) await store.put(`/h/${i}`, `v${i}`);
      const stream = rawWatch(server);
      stream.write({
        create_request: { key: Buffer.from('/h/'), range_end: Buffer.from('/h0'), start_revision: 1 },
      });
      const all = await collect(stream, (rs) => eventCount(rs) >= 5 || rs.some((r) => r.canceled === true));
      stream.end();
      assert.equal(
        all.find((r) => r.canceled === true),
        undefined,
        `a watch from revision 1 is not cancelled: ${JSON.stringify(all.find((r) => r.canceled === true))}`,
      );
      assert.equal(eventCount(all), 5);
      assert.deepEqual(await takeEvents(store, 1, 5), [2, 3, 4, 5, 6]);
    },
  );

  test(
    'after a restart, the reported compact revision can be watched from; no resume loop',
    { timeout: 60_000 },
    async () => {
      const dir = tempDir();
      let server = await startServer({ dataDir: dir, listen: '127.0.0.1:0' });
      let store = await openStore(server.url);
      for (let i = 0; i < 5; i++) await store.put(`/h/${i}`, `v${i}`);
      await store.close();
      await server.close(); // writes a final snapshot at revision 6
      server = await startServer({ dataDir: dir, listen: '127.0.0.1:0' });
      cleanups.push(() => server.close());
      store = await openStore(server.url);
      cleanups.push(() => store.close());
      await store.put('/h/after', 'x'); // revision 7
      const stream = rawWatch(server);
      stream.write({
        create_request: { key: Buffer.from('/h/'), range_end: Buffer.from('/h0'), start_revision: 2 },
      });
      const first = await collect(stream, (rs) => rs.some((r) => r.canceled === true));
      const canceled = first.find((r) => r.canceled === true) as Record<string, unknown>;
      const compact = Number(canceled.compact_revision);
      assert.ok(compact > 2, `history before the snapshot is gone (compact_revision ${compact})`);
      stream.end();
      // Resume where the server said: served, not cancelled again.
      const again = rawWatch(server);
      again.write({
        create_request: { key: Buffer.from('/h/'), range_end: Buffer.from('/h0'), start_revision: compact },
      });
      const resumed = await collect(
        again,
        (rs) => eventCount(rs) >= 1 || rs.some((r) => r.canceled === true),
      );
      again.end();
      assert.equal(
        resumed.find((r) => r.canceled === true),
        undefined,
        `a watch at the reported compact revision ${compact} is served`,
      );
      // The etcd engine sees the same contract: MUSTER_COMPACTED with a revision it can watch from.
      let reported: number | undefined;
      try {
        await takeEvents(store, 2, 1);
      } catch (err) {
        assert.ok(isMusterError(err, 'MUSTER_COMPACTED'), String(err));
        reported = Number(err.details.compactRevision);
      }
      assert.equal(reported, compact);
      assert.deepEqual(await takeEvents(store, compact, 1), [7]);
      // Reads before the snapshot are compacted, not answered with today's values.
      await assert.rejects(store.get('/h/0', { revision: 3 }), (e: unknown) =>
        isMusterError(e, 'MUSTER_COMPACTED'),
      );
    },
  );

  test(
    'replayed history is batched: 2,000 revisions arrive in a few responses',
    { timeout: 60_000 },
    async () => {
      const server = await startServer({ dataDir: tempDir(), listen: '127.0.0.1:0' });
      cleanups.push(() => server.close());
      const N = 2000;
      const writes: Promise<unknown>[] = [];
      for (let i = 0; i < N; i++) writes.push(server.store.put(`/h/${i % 50}`, `v${i}`));
      await Promise.all(writes);
      const stream = rawWatch(server);
      stream.write({
        create_request: { key: Buffer.from('/h/'), range_end: Buffer.from('/h0'), start_revision: 2 },
      });
      const all = await collect(stream, (rs) => eventCount(rs) >= N || rs.some((r) => r.canceled === true));
      stream.end();
      const withEvents = all.filter((r) => Array.isArray(r.events) && r.events.length > 0);
      assert.equal(eventCount(all), N);
      assert.ok(
        withEvents.length <= 10,
        `${withEvents.length} responses for ${N} revisions (etcd: 1,000 revisions a response)`,
      );
      // Events stay in revision order across responses.
      const revs = withEvents.flatMap((r) =>
        (r.events as { kv: { mod_revision: string } }[]).map((e) => Number(e.kv.mod_revision)),
      );
      assert.deepEqual(
        revs,
        [...revs].sort((a, b) => a - b),
      );
    },
  );
});
