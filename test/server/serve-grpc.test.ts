/**
 * `muster serve` through etcd's own clients: the `etcd3` package and a raw gRPC stream built from
 * the same `.proto` files. Checks etcd's semantics and etcd's error messages for bad input.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  Client as GrpcClient,
  credentials,
  makeGenericClientConstructor,
  Metadata,
  status,
  type ClientDuplexStream,
  type ServiceError,
} from '@grpc/grpc-js';
import { Etcd3 } from 'etcd3';
import { etcdServices } from './etcd-proto.js';
import { type MusterServer, startServer } from '../../src/server/index.js';
import { openStore } from '../../src/store/index.js';
import { textOf } from '../../src/store/keys.js';
import { makeTestCertificates, needBinary } from '../../src/testing/index.js';

const TOKEN = 'test-token-0123456789abcdef';

async function rejectsMatching(p: Promise<unknown>, re: RegExp): Promise<void> {
  await assert.rejects(p, (e: Error) => {
    assert.match(e.message, re);
    return true;
  });
}

type RawStream = ClientDuplexStream<unknown, Record<string, unknown>>;
const rawClients: { close(): void }[] = [];
after(() => {
  for (const c of rawClients) c.close();
});

/** A Watch stream on a plain gRPC client built from the etcd3 package's `.proto`. */
function rawWatch(server: MusterServer, metadata = new Metadata()): RawStream {
  const Client = makeGenericClientConstructor(etcdServices().Watch, 'Watch');
  const client = new Client(`${server.host}:${server.port}`, credentials.createInsecure());
  rawClients.push(client);
  const stream = (client as unknown as { Watch(md: Metadata): RawStream }).Watch(metadata);
  stream.on('error', () => undefined); // collect() reports errors; later ones (shutdown) are expected
  return stream;
}

/** Reads responses from a raw watch stream until `done` says enough. */
function collect(
  stream: RawStream,
  done: (all: Record<string, unknown>[]) => boolean,
  timeoutMs = 5000,
): Promise<Record<string, unknown>[]> {
  const all: Record<string, unknown>[] = [];
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out; got ${JSON.stringify(all)}`)), timeoutMs);
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

describe('muster serve over the etcd v3 API (etcd3 client)', () => {
  let dir: string;
  let server: MusterServer;
  let client: Etcd3;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'muster-serve-'));
    server = await startServer({ dataDir: dir, listen: '127.0.0.1:0' });
    client = new Etcd3({ hosts: `${server.host}:${server.port}` });
  });
  after(async () => {
    client?.close();
    await server?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('put, get, prefix, sort, keys-only, count-only, delete', async () => {
    await client.put('/g/b').value('2');
    await client.put('/g/a').value('1');
    await client.put('/g/c').value('3');
    await client.put('/h').value('outside');
    assert.equal(await client.get('/g/a').string(), '1');
    assert.deepEqual(await client.getAll().prefix('/g/').keys(), ['/g/a', '/g/b', '/g/c']);
    assert.deepEqual(await client.getAll().prefix('/g/').sort('Key', 'Descend').keys(), [
      '/g/c',
      '/g/b',
      '/g/a',
    ]);
    assert.deepEqual(await client.getAll().prefix('/g/').sort('Mod', 'Ascend').limit(2).keys(), [
      '/g/b',
      '/g/a',
    ]);
    assert.equal(await client.getAll().prefix('/g/').count(), 3);
    const raw = await client.getAll().prefix('/g/').limit(1).exec();
    assert.equal(raw.more, true);
    assert.equal(raw.count, '3');
    assert.equal(
      await client
        .delete()
        .prefix('/g/')
        .then((r) => r.deleted),
      '3',
    );
    assert.equal(await client.get('/g/a').string(), null);
    assert.equal(await client.get('/h').string(), 'outside');
  });

  test('txn: compare-and-set with both branches', async () => {
    await client.put('/t/x').value('1');
    const ok = await client.if('/t/x', 'Value', '==', '1').then(client.put('/t/x').value('2')).commit();
    assert.equal(ok.succeeded, true);
    const no = await client
      .if('/t/x', 'Value', '==', '1')
      .then(client.put('/t/x').value('3'))
      .else(client.get('/t/x'))
      .commit();
    assert.equal(no.succeeded, false);
    assert.equal(no.responses[0]?.response_range?.kvs[0]?.value.toString(), '2');
    const created = await client
      .if('/t/new', 'Create', '==', 0)
      .then(client.put('/t/new').value('n'))
      .commit();
    assert.equal(created.succeeded, true);
  });

  test('watch: ordered events with prevKv, from a past revision', async () => {
    const first = await client.put('/w/a').value('1');
    const startRev = Number(first.header.revision);
    await client.put('/w/a').value('2');
    await client.delete().key('/w/a');
    const watcher = await client
      .watch()
      .prefix('/w/')
      .startRevision(String(startRev))
      .withPreviousKV()
      .create();
    const seen: string[] = [];
    const done = new Promise<void>((resolve) => {
      watcher.on('put', (kv, prev) => {
        seen.push(`put ${kv.value.toString()} prev=${prev?.value.toString() ?? '-'}`);
        if (seen.length === 4) resolve();
      });
      watcher.on('delete', (kv) => {
        seen.push(`delete ${kv.key.toString()}`);
        if (seen.length === 4) resolve();
      });
    });
    await client.put('/w/b').value('3');
    await done;
    await watcher.cancel();
    assert.deepEqual(seen, ['put 1 prev=-', 'put 2 prev=1', 'delete /w/a', 'put 3 prev=-']);
  });

  test('leases: grant, attach, keep alive, time to live, revoke deletes the keys', async () => {
    const lease = client.lease(10, { autoKeepAlive: false });
    const id = await lease.grant();
    await lease.put('/l/a').value('x');
    const ttl = await client.lease(10, { autoKeepAlive: false }).grant(); // a second lease
    assert.notEqual(ttl, id);
    await lease.keepaliveOnce();
    const info = await client.leaseClient.leaseTimeToLive({ ID: id, keys: true });
    assert.equal(info.grantedTTL, '10');
    assert.deepEqual(
      info.keys.map((k) => k.toString()),
      ['/l/a'],
    );
    await lease.revoke();
    assert.equal(await client.get('/l/a').string(), null);
    const gone = await client.leaseClient.leaseTimeToLive({ ID: id, keys: false });
    assert.equal(gone.TTL, '-1');
  });

  test('bad input gets the error etcd gives', async () => {
    // A client of its own: etcd3's circuit breaker counts some of these failures.
    const client = new Etcd3({ hosts: `${server.host}:${server.port}` });
    await rejectsMatching(client.put('/x').value('v').lease('123456').exec(), /requested lease not found/);
    await rejectsMatching(client.leaseClient.leaseRevoke({ ID: '999' }), /requested lease not found/);
    await rejectsMatching(client.put('').value('v').exec(), /key is not provided/);
    await rejectsMatching(
      client
        .put('/big')
        .value(Buffer.alloc(1.5 * 1024 * 1024 + 1))
        .exec(),
      /request is too large/,
    );
    const head = Number((await client.put('/c/1').value('1')).header.revision);
    await rejectsMatching(
      client
        .get('/c/1')
        .revision(head + 100)
        .exec(),
      /future revision/,
    );
    await client.kv.compact({ revision: head });
    await rejectsMatching(
      client
        .get('/c/1')
        .revision(head - 1)
        .exec(),
      /required revision has been compacted/,
    );
    await rejectsMatching(client.kv.compact({ revision: head }), /required revision has been compacted/);
    const ops = Array.from({ length: 129 }, (_, i) => client.put(`/many/${i}`).value('v'));
    await rejectsMatching(
      client
        .if('/x', 'Version', '==', 0)
        .then(...ops)
        .commit(),
      /too many operations in txn request/,
    );
    await rejectsMatching(
      client
        .if('/x', 'Version', '==', 0)
        .then(client.put('/d').value('1'), client.put('/d').value('2'))
        .commit(),
      /duplicate key given in txn request/,
    );
    // Unimplemented RPCs answer at once.
    await rejectsMatching(client.maintenance.moveLeader({ targetID: '1' }), /UNIMPLEMENTED|not implemented/i);
    await rejectsMatching(
      client
        .put('/huge')
        .value(Buffer.alloc(3 * 1024 * 1024))
        .exec(),
      /larger than max/i,
    );
    client.close();
  });

  test('a malformed request gets an error status and the server carries on', async () => {
    const raw = new GrpcClient(`${server.host}:${server.port}`, credentials.createInsecure());
    rawClients.push(raw);
    const garbage = Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]); // a length beyond the message
    const err = await new Promise<ServiceError | null>((resolve) =>
      raw.makeUnaryRequest(
        '/etcdserverpb.KV/Put',
        (b: Buffer) => b,
        (b: Buffer) => b,
        garbage,
        (e) => resolve(e),
      ),
    );
    assert.ok(err !== null, 'a malformed message must not succeed');
    assert.notEqual(err.code, status.OK);
    await client.put('/after-garbage').value('ok');
    assert.equal(await client.get('/after-garbage').string(), 'ok');
  });

  test('watch stream: created, compaction cancels with compact_revision, progress follows events', async () => {
    const stream = rawWatch(server);
    const head = Number((await client.put('/p/a').value('1')).header.revision);
    stream.write({ create_request: { key: Buffer.from('/p/'), range_end: Buffer.from('/p0') } });
    stream.write({
      create_request: { key: Buffer.from('/p/'), range_end: Buffer.from('/p0'), start_revision: 1 },
    });
    const put = await client.put('/p/b').value('2');
    stream.write({ progress_request: {} });
    const all = await collect(stream, (rs) => rs.some((r) => r.watch_id === '-1'));
    stream.end();
    const created = all.filter((r) => r.created === true);
    assert.equal(created.length, 2);
    const canceled = all.find((r) => r.canceled === true);
    assert.ok(canceled, 'the watch at a compacted revision is cancelled');
    assert.ok(Number(canceled.compact_revision) > 1);
    assert.match(String(canceled.cancel_reason), /compacted/);
    const ev = all.findIndex((r) => Array.isArray(r.events) && r.events.length > 0);
    const progress = all.findIndex((r) => r.watch_id === '-1');
    assert.ok(ev >= 0 && ev < progress, 'the progress response comes after the event it covers');
    const progressRev = Number((all[progress]?.header as { revision: string }).revision);
    assert.ok(progressRev >= Number(put.header.revision) && progressRev > head);
  });
});

describe('muster serve with a token', () => {
  let dir: string;
  let server: MusterServer;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'muster-serve-auth-'));
    server = await startServer({ dataDir: dir, listen: '127.0.0.1:0', token: TOKEN });
  });
  after(async () => {
    await server?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('the right password works; a wrong one or none is refused as etcd refuses it', async () => {
    const good = new Etcd3({
      hosts: `${server.host}:${server.port}`,
      auth: { username: 'root', password: TOKEN },
    });
    await good.put('/auth/a').value('1');
    assert.equal(await good.get('/auth/a').string(), '1');
    good.close();
    const wrong = new Etcd3({
      hosts: `${server.host}:${server.port}`,
      auth: { username: 'root', password: 'nope' },
    });
    await rejectsMatching(wrong.get('/auth/a').string(), /authentication failed/);
    wrong.close();
    const none = new Etcd3({ hosts: `${server.host}:${server.port}` });
    await rejectsMatching(none.get('/auth/a').string(), /user name is empty/);
    none.close();
    const md = new Metadata();
    md.set('token', 'forged');
    await assert.rejects(
      collect(rawWatch(server, md), () => true),
      /invalid auth token/,
    );
  });

  test('a non-loopback address without a token is refused', async () => {
    await assert.rejects(startServer({ dataDir: join(dir, 'x'), listen: '0.0.0.0:0' }), /token-file/);
  });
});

describe('muster serve with TLS', { skip: needBinary('openssl', 'apt-get install openssl') }, () => {
  test('etcds:// through the etcd engine, with a token, verified against the CA', async () => {
    const certs = makeTestCertificates();
    const dir = mkdtempSync(join(tmpdir(), 'muster-serve-tls-'));
    const server = await startServer({
      dataDir: dir,
      listen: '127.0.0.1:0',
      cert: certs.serverCertFile,
      key: certs.serverKeyFile,
      token: TOKEN,
    });
    try {
      assert.match(server.url, /^etcds:\/\//);
      const store = await openStore(server.url.replace('etcds://', `etcds://root:${TOKEN}@`), {
        caFile: certs.caFile,
      });
      try {
        await store.put('/tls/a', 'secret');
        assert.equal(textOf((await store.get('/tls/a'))?.value ?? new Uint8Array()), 'secret');
      } finally {
        await store.close();
      }
    } finally {
      await server.close();
      rmSync(dir, { recursive: true, force: true });
      rmSync(certs.dir, { recursive: true, force: true });
    }
  });
});
