/**
 * A client whose connection is black-holed for longer than its lease TTL: the lease expires on the
 * server, its keys disappear for everyone else, and the client learns that the lease is lost — first
 * from its own validity deadline, then as `MUSTER_LEASE_NOT_FOUND` once the network heals — and
 * never gets the lease silently re-created.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { isMusterError, isRetryable } from '../../src/errors.js';
import { type EtcdStore, openEtcdStore } from '../../src/store/etcd/index.js';
import {
  ETCD_INSTALL_HINT,
  type EtcdCluster,
  type FaultProxy,
  needBinary,
  startEtcd,
  startFaultProxy,
} from '../../src/testing/index.js';
import { readUntil, uniquePrefix } from './etcd-helpers.js';

/**
 * The smallest keep-alive loop that follows brief §2: renew every TTL/3; the lease is valid until
 * the send time of the last acknowledged renewal plus the TTL; past that it is lost, for good.
 */
class KeepAliveLoop {
  lostAt: number | undefined;
  lostError: unknown;
  readonly errors: string[] = [];
  #validUntil: number;
  #stopped = false;
  readonly done: Promise<void>;

  constructor(
    readonly store: EtcdStore,
    readonly lease: string,
    readonly ttlSeconds: number,
    grantedAt: number,
  ) {
    this.#validUntil = grantedAt + ttlSeconds * 1000;
    this.done = this.#run();
  }

  async #run(): Promise<void> {
    while (!this.#stopped && this.lostAt === undefined) {
      const sentAt = performance.now();
      const left = this.#validUntil - sentAt;
      if (left <= 0) {
        this.lostAt = performance.now();
        this.lostError ??= new Error('validity deadline passed without an acknowledged keep-alive');
        return;
      }
      const ac = new AbortController();
      const timer = setTimeout(() => ac.abort(), left);
      try {
        await this.store.keepAlive(this.lease, { signal: ac.signal });
        this.#validUntil = sentAt + this.ttlSeconds * 1000;
      } catch (err) {
        this.errors.push(isMusterError(err) ? err.code : String(err));
        if (!isRetryable(err) && !isMusterError(err, 'MUSTER_ABORTED')) {
          this.lostAt = performance.now();
          this.lostError = err;
          return;
        }
      } finally {
        clearTimeout(timer);
      }
      await new Promise((r) =>
        setTimeout(
          r,
          Math.max(0, Math.min((this.ttlSeconds * 1000) / 3, this.#validUntil - performance.now())),
        ),
      );
    }
  }

  stop(): void {
    this.#stopped = true;
  }
}

describe('a black-holed client loses its lease', { skip: needBinary('etcd', ETCD_INSTALL_HINT) }, () => {
  let cluster: EtcdCluster;
  let proxy: FaultProxy;
  let observer: EtcdStore;
  let client: EtcdStore;
  before(async () => {
    cluster = await startEtcd();
    proxy = await startFaultProxy({ target: cluster.endpoints[0] as string });
    const prefix = uniquePrefix('blackhole');
    observer = openEtcdStore(cluster.url, { keyPrefix: prefix });
    client = openEtcdStore(`etcd://${proxy.endpoint}`, { keyPrefix: prefix, requestTimeout: '2s' });
  });
  after(async () => {
    await client?.close();
    await observer?.close();
    await proxy?.close();
    await cluster?.close();
  });

  test('the lease expires on the server, its keys vanish, and the client reports it lost', async () => {
    const grantedAt = performance.now();
    const grant = await client.grantLease(4); // long enough to survive a loaded CI machine
    await client.put('instance', 'alive', { lease: grant.id });
    const watch = observer.watch('instance', { fromRevision: (await observer.headRevision()) + 1 });
    const loop = new KeepAliveLoop(client, grant.id, grant.ttlSeconds, grantedAt);

    // Keep-alives flow for a while (several renewals): the key stays.
    await new Promise((r) => setTimeout(r, grant.ttlSeconds * 750));
    assert.equal(loop.lostAt, undefined, `lost while connected: ${String(loop.lostError)}`);
    assert.ok(await observer.get('instance'));

    const blackholedAt = performance.now();
    proxy.blackhole();
    const { events } = await readUntil(
      watch,
      (ev) => ev.some((e) => e.type === 'delete'),
      (grant.ttlSeconds + 5) * 1000,
    );
    const deletedSeenAt = performance.now();
    watch.close();
    assert.equal(events.find((e) => e.type === 'delete')?.kv.key, 'instance');
    assert.equal(await observer.get('instance'), undefined);
    assert.equal(await observer.leaseTimeToLive(grant.id), undefined);

    // The client gave up on its own before (or when) everyone else saw the key go.
    await loop.done;
    assert.ok(loop.lostAt !== undefined);
    assert.ok(
      loop.lostAt <= deletedSeenAt,
      `client lost at +${loop.lostAt - blackholedAt} ms, deletion seen at +${deletedSeenAt - blackholedAt} ms`,
    );
    assert.ok(
      loop.errors.every(
        (c) => c === 'MUSTER_TIMEOUT' || c === 'MUSTER_ABORTED' || c === 'MUSTER_UNAVAILABLE',
      ),
      loop.errors.join(),
    );

    // The network heals: the lease is reported gone, never re-created behind the caller's back.
    proxy.pass();
    proxy.cutAll();
    for (let i = 0; ; i++) {
      try {
        await client.keepAlive(grant.id);
        assert.fail('keepAlive of an expired lease succeeded');
      } catch (err) {
        if (isMusterError(err, 'MUSTER_LEASE_NOT_FOUND')) break;
        if (!isRetryable(err) || i > 30) throw err;
      }
    }
    await assert.rejects(client.put('instance', 'again', { lease: grant.id }), {
      code: 'MUSTER_LEASE_NOT_FOUND',
    });
    assert.equal(await observer.get('instance'), undefined);
  });
});
