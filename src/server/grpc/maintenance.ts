/**
 * etcd's Maintenance and Cluster services: Status, Alarm (recorded durably, see alarms.ts), Snapshot
 * (muster's own snapshot format, restorable with `muster serve --restore FILE`), Hash and HashKV
 * (CRC32 of the key-value state), Defragment (a successful no-op: the memory engine has nothing to
 * defragment) and MemberList (this one server). MoveLeader answers UNIMPLEMENTED.
 */
import { crc32 } from '../codec.js';
import type { ServiceImplementation, StreamCall } from './call.js';
import { header, type ServiceContext, unary } from './context.js';
import { toGrpcError } from './errors.js';

/**
 * The etcd version muster serve reports. Its behaviour matches this release where clients look at
 * the version: progress requests are answered in order with events (the fix for etcd#15220).
 */
export const REPORTED_ETCD_VERSION = '3.4.25';

/** Bytes of snapshot per Snapshot response (etcd sends 32 KiB chunks). */
export const SNAPSHOT_CHUNK_BYTES = 32 * 1024;

const ALARM_GET = 0;
const ALARM_ACTIVATE = 1;
const ALARM_DEACTIVATE = 2;
const ALARM_NAMES = ['NONE', 'NOSPACE', 'CORRUPT'];

export function maintenanceService(ctx: ServiceContext): ServiceImplementation {
  async function statusRpc(): Promise<Record<string, unknown>> {
    const rev = await ctx.store.headRevision();
    const size = ctx.dbSize();
    return {
      header: header(ctx, rev),
      version: REPORTED_ETCD_VERSION,
      dbSize: size,
      leader: ctx.memberId,
      raftIndex: rev,
      raftTerm: 1,
      raftAppliedIndex: rev,
      errors: ctx.alarms
        .list()
        .map((a) => `memberID:${a.memberID} alarm:${ALARM_NAMES[a.alarm] ?? a.alarm} `),
      dbSizeInUse: size,
      isLearner: false,
    };
  }
  async function alarm(
    req: { action: number; memberID: string; alarm: number },
    _call: unknown,
    user: string | undefined,
  ): Promise<Record<string, unknown>> {
    if (req.action !== ALARM_GET) ctx.auth.requireRoot(user);
    const member = req.memberID === '0' ? ctx.memberId : String(req.memberID);
    let alarms;
    switch (req.action) {
      case ALARM_ACTIVATE:
        alarms = await ctx.alarms.activate(member, req.alarm);
        ctx.log?.warn({ alarm: ALARM_NAMES[req.alarm], memberID: member }, 'alarm raised');
        break;
      case ALARM_DEACTIVATE:
        alarms = await ctx.alarms.deactivate(member, req.alarm);
        if (alarms.length > 0)
          ctx.log?.info({ alarm: ALARM_NAMES[req.alarm], memberID: member }, 'alarm disarmed');
        break;
      case ALARM_GET:
      default:
        alarms = ctx.alarms.list(req.alarm);
    }
    return { header: header(ctx, ctx.store.revision), alarms };
  }
  async function hash(
    _req: unknown,
    _call: unknown,
    user: string | undefined,
  ): Promise<Record<string, unknown>> {
    ctx.auth.requireRoot(user);
    const rev = await ctx.store.headRevision();
    return { header: header(ctx, rev), hash: await kvHash(ctx, rev) };
  }
  async function hashKv(
    req: { revision: string },
    _call: unknown,
    user: string | undefined,
  ): Promise<Record<string, unknown>> {
    ctx.auth.requireRoot(user);
    const head = await ctx.store.headRevision();
    const rev = Number(req.revision) > 0 ? Number(req.revision) : head;
    return {
      header: header(ctx, head),
      hash: await kvHash(ctx, rev),
      compact_revision: ctx.store.compactRevision,
    };
  }
  async function defragment(
    _req: unknown,
    _call: unknown,
    user: string | undefined,
  ): Promise<Record<string, unknown>> {
    ctx.auth.requireRoot(user);
    ctx.log?.info('defragment requested: a no-op, the memory engine keeps no free pages to reclaim');
    return { header: header(ctx, ctx.store.revision) };
  }
  function snapshot(call: StreamCall): void {
    try {
      ctx.auth.requireRoot(ctx.auth.check(call.metadata));
    } catch (err) {
      call.emit('error', toGrpcError(err));
      return;
    }
    ctx.exportSnapshot().then(
      (bytes) => {
        const h = header(ctx, ctx.store.revision);
        let at = 0;
        const next = (): void => {
          while (at < bytes.length) {
            const end = Math.min(bytes.length, at + SNAPSHOT_CHUNK_BYTES);
            const ok = call.write({
              header: h,
              remaining_bytes: bytes.length - end,
              blob: bytes.subarray(at, end),
            });
            at = end;
            if (!ok) {
              call.once('drain', next);
              return;
            }
          }
          call.end();
        };
        next();
      },
      (err: unknown) => call.emit('error', toGrpcError(err)),
    );
  }
  return {
    Status: unary(ctx, statusRpc),
    Alarm: unary(ctx, alarm),
    Hash: unary(ctx, hash),
    HashKV: unary(ctx, hashKv),
    Defragment: unary(ctx, defragment),
    Snapshot: snapshot,
  };
}

/** CRC32 of every key-value at `rev`, in key order (what HashKV compares across members). */
async function kvHash(ctx: ServiceContext, rev: number): Promise<number> {
  const r = await ctx.store.range({ prefix: '' }, { revision: rev });
  const parts: Buffer[] = [];
  for (const kv of r.kvs) {
    const meta = Buffer.allocUnsafe(24);
    meta.writeDoubleLE(kv.createRevision, 0);
    meta.writeDoubleLE(kv.modRevision, 8);
    meta.writeDoubleLE(kv.version, 16);
    parts.push(Buffer.from(kv.key, 'latin1'), Buffer.from(kv.value), meta, Buffer.from(kv.lease));
  }
  return crc32(Buffer.concat(parts));
}

export function clusterService(ctx: ServiceContext): ServiceImplementation {
  async function memberList(): Promise<Record<string, unknown>> {
    return {
      header: header(ctx, ctx.store.revision),
      members: [
        { ID: ctx.memberId, name: 'muster', peerURLs: [], clientURLs: [ctx.clientUrl], isLearner: false },
      ],
    };
  }
  return { MemberList: unary(ctx, memberList) };
}
