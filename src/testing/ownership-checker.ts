/**
 * The ownership checker: judges a recorded history of partition ownership (see
 * {@link OwnershipEvent}) against muster's invariants (brief §10, 3 and 4):
 *
 * - **at most one owner at every instant**: for each partition, the intervals during which owners
 *   worked on it never overlap, whoever the owners are;
 * - **fencing tokens strictly increase**: ordered by start, each ownership of a partition has a larger
 *   token than the one before, and no token is used twice;
 * - **work happens only inside ownership**: every `work` event lies within its ownership's interval;
 * - **eventually exactly one owner**: at the end of a quiet period, every partition has exactly one
 *   open ownership, held by a live instance ({@link checkConvergence}).
 *
 * The checker is pure and deliberately simple, so that it can be trusted more than the code it checks.
 */
import type { OwnershipEvent } from './ownership-history.js';

/** What kind of rule a violation breaks. */
export type ViolationKind =
  | 'overlap'
  | 'token-order'
  | 'token-reused'
  | 'work-outside-ownership'
  | 'malformed'
  | 'unowned'
  | 'multiple-owners'
  | 'dead-owner';

/** One broken rule, with enough context to find it in the history. */
export interface Violation {
  readonly kind: ViolationKind;
  readonly partition?: string;
  readonly message: string;
}

/** One ownership as reconstructed from the history: an owner working on a partition with a token. */
export interface Ownership {
  readonly partition: string;
  readonly instance: string;
  readonly token: number;
  /** When work started. */
  readonly start: number;
  /** When work certainly ended (`min(stop, validUntil)`, or the crash); `Infinity` while open. */
  readonly end: number;
  /** True while the history has no stop or crash for it. */
  readonly open: boolean;
}

/** The checker's verdict. */
export interface CheckResult {
  readonly ok: boolean;
  readonly violations: readonly Violation[];
  /** Every ownership found, per partition, in start order. */
  readonly ownerships: ReadonlyMap<string, readonly Ownership[]>;
  /** Number of ownerships (distinct partition, instance and token) in the history. */
  readonly transitions: number;
}

interface Building {
  partition: string;
  instance: string;
  token: number;
  start: number;
  end: number;
  stoppedAt?: number;
  open: boolean;
}

const idOf = (partition: string, instance: string, token: number): string =>
  `${partition}\u0000${instance}\u0000${token}`;

/** Reconstructs ownerships from a history and checks the safety invariants. Never throws. */
export function checkOwnership(history: readonly OwnershipEvent[]): CheckResult {
  const violations: Violation[] = [];
  const events = [...history].sort((a, b) => a.t - b.t);
  /**
   * Incarnations of each ownership (partition, instance, token), in order: work under one ownership
   * may stop and start again — an agent stops its child when a renewal is late and starts it again
   * when the renewal arrives in time, under the same token — but never start twice without a stop.
   */
  const all = new Map<string, Building[]>();
  const openByInstance = new Map<string, Set<Building>>();
  const work: OwnershipEvent[] = [];

  for (const e of events) {
    if (e.type === 'crash') {
      for (const o of openByInstance.get(e.instance) ?? []) {
        o.open = false;
        o.end = Math.min(o.end, e.t);
      }
      openByInstance.delete(e.instance);
      continue;
    }
    if (e.type === 'acquire' || e.type === 'release') continue;
    if (e.type === 'work') {
      work.push(e);
      continue;
    }
    const id = idOf(e.partition, e.instance, e.token);
    const incarnations = all.get(id);
    const o = incarnations?.at(-1);
    if (e.type === 'start') {
      if (o?.open === true) {
        violations.push({
          kind: 'malformed',
          partition: e.partition,
          message: `${e.instance} started partition ${e.partition} twice with token ${e.token} (no stop in between)`,
        });
        continue;
      }
      const b: Building = {
        partition: e.partition,
        instance: e.instance,
        token: e.token,
        start: e.t,
        end: Infinity,
        open: true,
      };
      if (incarnations === undefined) all.set(id, [b]);
      else incarnations.push(b);
      let set = openByInstance.get(e.instance);
      if (set === undefined) openByInstance.set(e.instance, (set = new Set()));
      set.add(b);
    } else if (o === undefined) {
      violations.push({
        kind: 'malformed',
        partition: e.partition,
        message: `${e.instance} recorded ${e.type} for partition ${e.partition} token ${e.token} without a start`,
      });
    } else {
      o.open = false;
      o.stoppedAt = e.t;
      o.end = Math.min(o.end, e.t, e.validUntil ?? Infinity);
      openByInstance.get(e.instance)?.delete(o);
    }
  }

  for (const w of work) {
    if (w.type !== 'work') continue;
    const incarnations = all.get(idOf(w.partition, w.instance, w.token));
    if (incarnations === undefined) {
      violations.push({
        kind: 'malformed',
        partition: w.partition,
        message: `${w.instance} recorded work for partition ${w.partition} token ${w.token} without a start`,
      });
      continue;
    }
    if (incarnations.some((i) => w.t >= i.start && w.t <= i.end)) continue;
    // Named after the incarnation it came closest after (or the first).
    const o = incarnations.filter((i) => i.start <= w.t).at(-1) ?? incarnations[0];
    if (o !== undefined) {
      violations.push({
        kind: 'work-outside-ownership',
        partition: o.partition,
        message: `${o.instance} worked on partition ${o.partition} (token ${o.token}) at ${fmt(w.t)}, outside its ownership [${fmt(o.start)}, ${fmt(o.end)}]`,
      });
    }
  }

  const ownerships = new Map<string, Ownership[]>();
  for (const o of [...all.values()].flat()) {
    let list = ownerships.get(o.partition);
    if (list === undefined) ownerships.set(o.partition, (list = []));
    list.push({
      partition: o.partition,
      instance: o.instance,
      token: o.token,
      start: o.start,
      end: o.end,
      open: o.open,
    });
  }

  const transitions = all.size;
  for (const [partition, list] of ownerships) {
    list.sort((a, b) => a.start - b.start || a.token - b.token);
    const seen = new Map<number, Ownership>();
    let latest: Ownership | undefined; // the ownership with the latest end so far
    let previous: Ownership | undefined;
    for (const o of list) {
      const same = seen.get(o.token);
      // The same owner again under its token is a later incarnation of one ownership.
      if (same !== undefined && same.instance !== o.instance) {
        violations.push({
          kind: 'token-reused',
          partition,
          message: `partition ${partition}: token ${o.token} used by ${same.instance} and again by ${o.instance}`,
        });
      }
      seen.set(o.token, o);
      if (previous !== undefined && o.token <= previous.token && same === undefined) {
        violations.push({
          kind: 'token-order',
          partition,
          message: `partition ${partition}: ${o.instance} started with token ${o.token} after ${previous.instance} had token ${previous.token}`,
        });
      }
      if (latest !== undefined && o.start < latest.end) {
        violations.push({
          kind: 'overlap',
          partition,
          message: `partition ${partition}: ${o.instance} (token ${o.token}) started at ${fmt(o.start)} while ${latest.instance} (token ${latest.token}) owned it until ${fmt(latest.end)}`,
        });
      }
      if (latest === undefined || o.end > latest.end) latest = o;
      previous = o;
    }
  }

  return { ok: violations.length === 0, violations, ownerships, transitions };
}

export interface ConvergenceOptions {
  /** Every partition that must have an owner. */
  readonly partitions: readonly string[];
  /** Instances alive at the end; an open ownership by anyone else is a violation. Default: any. */
  readonly live?: readonly string[];
}

/**
 * Checks that the history ends converged: each partition has exactly one open ownership, held by a
 * live instance. Call it on a history recorded up to the end of a quiet period.
 */
export function checkConvergence(result: CheckResult, options: ConvergenceOptions): Violation[] {
  const violations: Violation[] = [];
  const live = options.live === undefined ? undefined : new Set(options.live);
  for (const partition of options.partitions) {
    const open = (result.ownerships.get(partition) ?? []).filter((o) => o.open);
    if (open.length === 0) {
      violations.push({ kind: 'unowned', partition, message: `partition ${partition} has no owner` });
    } else if (open.length > 1) {
      violations.push({
        kind: 'multiple-owners',
        partition,
        message: `partition ${partition} has ${open.length} owners: ${open.map((o) => `${o.instance}#${o.token}`).join(', ')}`,
      });
    }
    for (const o of open) {
      if (live !== undefined && !live.has(o.instance)) {
        violations.push({
          kind: 'dead-owner',
          partition,
          message: `partition ${partition} is still held by ${o.instance}, which is not live`,
        });
      }
    }
  }
  return violations;
}

/** A human summary of violations (the first `limit`), for assertion messages. */
export function describeViolations(violations: readonly Violation[], limit = 20): string {
  const lines = violations.slice(0, limit).map((v) => `- [${v.kind}] ${v.message}`);
  if (violations.length > limit) lines.push(`… and ${violations.length - limit} more`);
  return lines.join('\n');
}

function fmt(t: number): string {
  return Number.isFinite(t) ? t.toFixed(1) : String(t);
}
