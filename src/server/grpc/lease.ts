/**
 * The etcd Lease service on the memory engine. As in etcd, a keep-alive for an unknown lease is
 * answered with TTL 0 and a time-to-live query with TTL -1, not with an error; lease ids are chosen
 * by the server (a requested ID is refused).
 */
import { isMusterError } from '../../errors.js';
import { MAX_LEASE_TTL_SECONDS } from '../../store/index.js';
import type { ServiceImplementation, StreamCall } from './call.js';
import { failStream, header, type ResponseHeader, type ServiceContext, unary } from './context.js';
import { leaseOf } from './convert.js';
import { ETCD } from './errors.js';

/** A lease id that names a lease, or `undefined` for ids no lease can have (0, negative). */
function leaseId(id: string): string | undefined {
  const lease = leaseOf(id);
  return lease === '0' ? undefined : lease;
}

/**
 * Throws etcd's "permission denied" unless `user` may write every key attached to lease `id` (etcd's
 * `checkLeasePuts`: for LeaseRevoke, which deletes them, and for a Put that attaches another key to
 * the lease). An unknown lease passes: the call then fails as it would without RBAC. Synchronous on
 * purpose: callers check and then start the change in the same event-loop turn (the engine applies a
 * change before its first `await`), so the keys checked are the keys the change meets.
 */
export function authorizeLeaseKeys(ctx: ServiceContext, user: string, id: string): void {
  for (const key of ctx.store.leaseKeys(id) ?? []) ctx.auth.authorize(user, key, '', true);
}

/**
 * etcd's smallest lease TTL with its default timing (1.5 election timeouts, rounded up): shorter
 * requests are granted this TTL, and the answer says so.
 */
export const MIN_LEASE_TTL_SECONDS = 2;

/** The Lease service implementation. */
export function leaseService(ctx: ServiceContext): ServiceImplementation {
  const store = ctx.store;
  const head = (): ResponseHeader => header(ctx, store.revision);

  async function grant(req: { TTL: string; ID: string }): Promise<Record<string, unknown>> {
    if (req.ID !== '0') throw ETCD.unsupported('choosing the lease ID');
    if (ctx.alarms.noSpace) throw ETCD.noSpace();
    const requested = Number(req.TTL);
    if (requested > MAX_LEASE_TTL_SECONDS) throw ETCD.leaseTtlTooLarge();
    const g = await store.grantLease(Math.max(MIN_LEASE_TTL_SECONDS, requested));
    return { header: header(ctx, await store.headRevision()), ID: g.id, TTL: g.ttlSeconds, error: '' };
  }

  async function revoke(
    req: { ID: string },
    _call: unknown,
    user: string | undefined,
  ): Promise<{ header: ResponseHeader }> {
    const id = leaseId(req.ID);
    if (id === undefined) throw ETCD.leaseNotFound();
    // RBAC, as etcd: revoking deletes the lease's keys, so the user must be allowed to write every one.
    if (user !== undefined) authorizeLeaseKeys(ctx, user, id);
    await store.revokeLease(id);
    return { header: header(ctx, await store.headRevision()) };
  }

  async function timeToLive(req: { ID: string; keys: boolean }): Promise<Record<string, unknown>> {
    const id = leaseId(req.ID);
    const info = id === undefined ? undefined : await store.leaseTimeToLive(id);
    if (info === undefined) return { header: head(), ID: req.ID, TTL: -1, grantedTTL: 0, keys: [] };
    return {
      header: head(),
      ID: info.id,
      TTL: info.ttlSeconds,
      grantedTTL: info.grantedTtlSeconds,
      keys: req.keys ? info.keys.map((k) => Buffer.from(k, 'latin1')) : [],
    };
  }

  async function leases(): Promise<Record<string, unknown>> {
    return { header: head(), leases: store.leaseIds().map((ID) => ({ ID })) };
  }

  function keepAlive(call: StreamCall<{ ID: string }, unknown>): void {
    try {
      ctx.auth.check(call.metadata);
    } catch (err) {
      failStream(call, err);
      return;
    }
    let ended = false;
    const handle = {
      end: (): void => {
        if (ended) return;
        ended = true;
        ctx.streams.delete(handle);
        call.end();
      },
    };
    ctx.streams.add(handle);
    call.on('data', (req: { ID: string }) => {
      const id = leaseId(req.ID);
      const renewed = id === undefined ? Promise.resolve(0) : store.keepAlive(id);
      renewed.then(
        (ttl) => {
          if (!ended) call.write({ header: head(), ID: req.ID, TTL: ttl });
        },
        (err: unknown) => {
          if (ended) return;
          if (isMusterError(err, 'MUSTER_LEASE_NOT_FOUND'))
            call.write({ header: head(), ID: req.ID, TTL: 0 });
          else {
            ended = true;
            ctx.streams.delete(handle);
            failStream(call, err);
          }
        },
      );
    });
    call.on('end', () => handle.end());
    call.on('cancelled', () => {
      ended = true;
      ctx.streams.delete(handle);
    });
    call.on('error', () => {
      ended = true;
      ctx.streams.delete(handle);
    });
  }

  return {
    LeaseGrant: unary(ctx, grant),
    LeaseRevoke: unary(ctx, revoke),
    LeaseTimeToLive: unary(ctx, timeToLive),
    LeaseLeases: unary(ctx, leases),
    LeaseKeepAlive: keepAlive,
  };
}
