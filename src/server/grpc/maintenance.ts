/**
 * Enough of etcd's Maintenance and Cluster services for clients and etcdctl to connect and report:
 * Status, Alarm (never any alarm) and MemberList (this one server). Everything else answers
 * UNIMPLEMENTED.
 */
import type { UntypedServiceImplementation } from '@grpc/grpc-js';
import { header, type ServiceContext, unary } from './context.js';

/**
 * The etcd version muster serve reports. Its behaviour matches this release where clients look at
 * the version: progress requests are answered in order with events (the fix for etcd#15220).
 */
export const REPORTED_ETCD_VERSION = '3.4.25';

export function maintenanceService(ctx: ServiceContext): UntypedServiceImplementation {
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
      errors: [],
      dbSizeInUse: size,
      isLearner: false,
    };
  }
  async function alarm(): Promise<Record<string, unknown>> {
    return { header: header(ctx, ctx.store.revision), alarms: [] };
  }
  return { Status: unary(ctx, statusRpc), Alarm: unary(ctx, alarm) };
}

export function clusterService(ctx: ServiceContext): UntypedServiceImplementation {
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
