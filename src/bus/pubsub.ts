/**
 * Publish/subscribe without a broker. A node that subscribes to topic T registers an instance of
 * the service `topic.T` (under the bus session, with its address; tags say whether it has plain
 * subscribers and which queue groups). A publisher watches that service and sends each message over
 * its direct connection to every subscriber node — to one node per queue group, chosen by a hash of
 * the message id, so redundant publishers of the same id pick the same node.
 *
 * Each subscriber node remembers the ids it delivered for a window and delivers an id once, so
 * several publishers may publish the same message. A message with a TTL carries its expiry and is
 * dropped, not delivered, once expired. A subscriber whose queue at a publisher is full loses that
 * message — counted (`muster_bus_dropped_total`), reported by the bus `dropped` event and logged —
 * while the publisher and the other subscribers are unaffected.
 */
import { invalidArgument, isMusterError } from '../errors.js';
import { checkServiceName, type InstanceView, isHealthy, type Member } from '../membership/index.js';
import { toMillis } from '../util/duration.js';
import type { Bus } from './bus.js';
import { checkedFrame, type Connection, type PublishBody } from './connection.js';
import { Kind } from './frame.js';
import {
  DEFAULT_DEDUP_MAX_IDS,
  DEFAULT_DEDUP_WINDOW_MS,
  type DropEvent,
  type BusPublishOptions,
  type PublishResult,
  type ResolvedBusOptions,
  type SubscribeOptions,
  type SubscriptionHandler,
} from './types.js';

/** The membership service whose instances are the subscriber nodes of `topic`. */
export function topicService(topic: string): string {
  if (typeof topic !== 'string' || topic.length === 0)
    throw invalidArgument('topic must be a non-empty string');
  const service = `topic.${topic}`;
  try {
    checkServiceName(service);
  } catch {
    throw invalidArgument(
      `topic ${JSON.stringify(topic)} must be 1–57 letters, digits, '.', '_' or '-' (it names the membership service topic.<topic>)`,
    );
  }
  return service;
}

/** 50 ms between attempts to deliver an acknowledged publication to a peer that is not reachable. */
const RESEND_DELAY_MS = 50;

const ALL_TAG = 'sub:all';
const GROUP_TAG = 'group:';

interface WireBody extends PublishBody {
  /** Queue groups this node was chosen for. */
  readonly g?: readonly string[];
  /** Whether the node's plain subscribers get it. */
  readonly all?: boolean;
}

/**
 * Ids delivered recently, forgotten after the window or beyond the size bound (oldest first). The
 * ids are also kept in arrival order in flat arrays, so forgetting the oldest is an index increment —
 * not an iterator over the set per message (that was ~6 % of a subscriber's CPU per delivery).
 */
export class DedupWindow {
  readonly #seen = new Set<string>();
  readonly #windowMs: number;
  readonly #max: number;
  /** Arrival order from `#head` on: ids and when each arrived (one entry per id in `#seen`). */
  #ids: string[] = [];
  #times: number[] = [];
  #head = 0;

  constructor(windowMs: number, max = DEFAULT_DEDUP_MAX_IDS) {
    this.#windowMs = windowMs;
    this.#max = max;
  }

  /** True the first time `id` is seen within the window. */
  first(id: string, now: number): boolean {
    const ids = this.#ids;
    while (
      this.#head < ids.length &&
      ((this.#times[this.#head] as number) + this.#windowMs <= now || this.#seen.size >= this.#max)
    ) {
      this.#seen.delete(ids[this.#head] as string);
      ids[this.#head++] = '';
    }
    if (this.#head > 1024 && this.#head * 2 > ids.length) {
      this.#ids = ids.slice(this.#head);
      this.#times = this.#times.slice(this.#head);
      this.#head = 0;
    }
    if (this.#seen.has(id)) return false;
    this.#seen.add(id);
    this.#ids.push(id);
    this.#times.push(now);
    return true;
  }
}

interface Subscription {
  readonly handler: SubscriptionHandler;
  readonly group: string | undefined;
}

interface LocalTopic {
  readonly topic: string;
  readonly subs: Set<Subscription>;
  readonly dedup: DedupWindow;
  member: Member | undefined;
  joining: Promise<void> | undefined;
}

export class Topics {
  readonly #bus: Bus;
  readonly #o: ResolvedBusOptions;
  readonly #onDrop: (e: DropEvent) => void;
  readonly #topics = new Map<string, LocalTopic>();
  #seq = 0;
  readonly #lastLogged = new Map<string, number>();
  /**
   * Publications for peers being connected to, by address: the publisher does not wait for a
   * connect (a frozen peer's takes `connectTimeout`); they are written once it opens, or dropped as
   * `not-connected` if it fails. Bounded by `maxQueueBytes` per peer, like an open connection.
   */
  readonly #waiting = new Map<string, Waiting>();
  /** Per topic view, its targets for the view's current instances. */
  readonly #plans = new WeakMap<InstanceView, Plan>();
  readonly #prefix = `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;

  constructor(bus: Bus, o: ResolvedBusOptions, onDrop: (e: DropEvent) => void) {
    this.#bus = bus;
    this.#o = o;
    this.#onDrop = onDrop;
  }

  async subscribe(
    topic: string,
    handler: SubscriptionHandler,
    options: SubscribeOptions,
  ): Promise<() => Promise<void>> {
    const service = topicService(topic);
    if (typeof handler !== 'function') throw invalidArgument('handler must be a function');
    if (
      options.queueGroup !== undefined &&
      (typeof options.queueGroup !== 'string' || options.queueGroup === '')
    )
      throw invalidArgument('queueGroup must be a non-empty string');
    let local = this.#topics.get(topic);
    if (local === undefined) {
      const windowMs = toMillis(options.dedupWindow ?? DEFAULT_DEDUP_WINDOW_MS, 'dedupWindow');
      local = {
        topic,
        subs: new Set(),
        dedup: new DedupWindow(windowMs),
        member: undefined,
        joining: undefined,
      };
      this.#topics.set(topic, local);
    }
    const sub: Subscription = { handler, group: options.queueGroup };
    local.subs.add(sub);
    await this.#advertise(local, service);
    return async () => {
      local.subs.delete(sub);
      await this.#advertise(local, service);
    };
  }

  /** Brings the topic record in step with the local subscriptions (serialised per topic). */
  #advertise(local: LocalTopic, service: string): Promise<void> {
    const run = async (): Promise<void> => {
      const tags = tagsOf(local);
      if (local.subs.size === 0) {
        const m = local.member;
        local.member = undefined;
        await m?.leave();
        // A subscribe during the leave reused this entry (and queued its join behind the leave).
        if (local.subs.size === 0 && this.#topics.get(local.topic) === local)
          this.#topics.delete(local.topic);
        return;
      }
      if (local.member === undefined) local.member = await this.#bus.joinService(service, tags);
      else if (tags.join() !== local.member.record.tags.filter((t) => t !== 'muster-bus').join())
        await local.member.update({ tags: ['muster-bus', ...tags] });
    };
    const next = (local.joining ?? Promise.resolve()).catch(() => undefined).then(run);
    local.joining = next;
    return next;
  }

  /** A publication arrived (from `conn`, or from this node itself when `conn` is undefined). */
  receive(conn: Connection | undefined, ackId: number, body: WireBody): void {
    const local = this.#topics.get(body.topic);
    if (local === undefined) {
      // Not subscribed (any more): no ack, so an at-least-once publisher learns it from membership.
      return;
    }
    const from = conn?.peer?.node ?? this.#bus.id;
    if (body.exp !== undefined && Date.now() >= body.exp) {
      this.#drop(from, body.topic, body.id, 'expired');
      conn?.ack(ackId);
      return;
    }
    if (!local.dedup.first(body.id, this.#o.clock.monotonic())) {
      this.#bus.metrics.duplicate(body.topic);
      conn?.ack(ackId);
      return;
    }
    let running: Promise<unknown>[] | undefined;
    this.#bus.metrics.delivered(body.topic);
    const delivery = { topic: body.topic, id: body.id, from };
    let groupsDone: Set<string> | undefined; // made only when the node has queue groups
    for (const sub of local.subs) {
      if (sub.group === undefined ? body.all === false : !(body.g ?? []).includes(sub.group)) continue;
      if (sub.group !== undefined) {
        if (groupsDone?.has(sub.group) === true) continue;
        (groupsDone ??= new Set()).add(sub.group);
      }
      try {
        const r = sub.handler(body.m, delivery);
        if (r instanceof Promise)
          (running ??= []).push(r.catch((err: unknown) => this.#handlerFailed(body, err)));
      } catch (err) {
        this.#handlerFailed(body, err);
      }
    }
    if (conn === undefined || ackId === 0) return;
    if (running === undefined) conn.ack(ackId);
    else void Promise.all(running).then(() => conn.ack(ackId));
  }

  #handlerFailed(body: WireBody, err: unknown): void {
    this.#o.logger.error(
      { topic: body.topic, id: body.id, err: String(err) },
      'a subscription handler threw; the message counts as delivered',
    );
  }

  publish(topic: string, message: unknown, options: BusPublishOptions): Promise<PublishResult> {
    const service = topicService(topic);
    if (options.id !== undefined && (typeof options.id !== 'string' || options.id === ''))
      throw invalidArgument('id must be a non-empty string');
    const id = options.id ?? `${this.#bus.id}-${this.#prefix}-${++this.#seq}`;
    const ttlMs = options.ttl === undefined ? undefined : toMillis(options.ttl, 'ttl');
    const base: PublishBody = {
      topic,
      id,
      ...(message === undefined ? {} : { m: message }),
      ...(ttlMs === undefined ? {} : { exp: Date.now() + ttlMs }),
    };
    const view = this.#bus.readyView(service);
    if (options.ack === true || view === undefined) {
      return this.#bus.instances(service).then((v) => this.#publishTo(v, topic, id, base, options));
    }
    // The usual case is synchronous: no await shared between subscribers (see #publishTo).
    return Promise.resolve(this.#publishTo(view, topic, id, base, options));
  }

  /** Which nodes get a message: computed once per change of the topic's view. */
  #plan(view: InstanceView): Plan {
    const source = view.instances();
    let plan = this.#plans.get(view);
    if (plan !== undefined && plan.source === source) return plan;
    const nodes = source.filter((i) => i.address !== null && i.state !== 'leaving');
    const all: PlanTarget[] = [];
    // Per queue group: its healthy members (active, not drained or failing) and the others.
    const groups = new Map<string, { healthy: PlanTarget[]; rest: PlanTarget[] }>();
    for (const n of nodes) {
      const t: PlanTarget = { address: n.address as string, node: n.id };
      if (n.tags.includes(ALL_TAG)) all.push(t);
      for (const tag of n.tags) {
        if (!tag.startsWith(GROUP_TAG)) continue;
        const g = tag.slice(GROUP_TAG.length);
        let members = groups.get(g);
        if (members === undefined) groups.set(g, (members = { healthy: [], rest: [] }));
        (isHealthy(n) ? members.healthy : members.rest).push(t);
      }
    }
    // A queue group's message is work for one member: a drained or failing member gets none while a
    // healthy one is there (as RPC calls); with none healthy, every member is a candidate, so the
    // message is not lost. Every-subscriber delivery (`sub:all`) goes to each node until it leaves.
    const chosen = [...groups].map(([g, m]): [string, PlanTarget[]] => [
      g,
      m.healthy.length > 0 ? m.healthy : m.rest,
    ]);
    plan = { source, all, allSet: new Set(all), groups: chosen };
    this.#plans.set(view, plan);
    return plan;
  }

  /**
   * Sends to every target. Without `ack` this is synchronous and each subscriber's path is its own:
   * an open connection gets the frame written (bounded by its queue), a peer marked down is dropped
   * at once, a peer being connected to gets the frame queued behind the connect (bounded) — nothing
   * here waits on any peer, so a stalled subscriber cannot delay the others. Nothing is allocated
   * per subscriber in the usual case (no queue groups): the frame is encoded once and written to
   * each connection.
   */
  #publishTo(
    view: InstanceView,
    topic: string,
    id: string,
    base: PublishBody,
    options: BusPublishOptions,
  ): PublishResult | Promise<PublishResult> {
    const plan = this.#plan(view);
    this.#bus.metrics.published(topic);
    // Queue groups: one member each, chosen by a hash of the id (the same on every publisher).
    let groupsOf: Map<PlanTarget, string[]> | undefined;
    for (const [g, members] of plan.groups) {
      const chosen = members[hashString(`${g}\u0000${id}`) % members.length];
      if (chosen === undefined) continue;
      groupsOf ??= new Map();
      const gs = groupsOf.get(chosen);
      if (gs === undefined) groupsOf.set(chosen, [g]);
      else gs.push(g);
    }
    const bodyFor = (t: PlanTarget, all: boolean): WireBody => {
      const g = groupsOf?.get(t);
      return g === undefined ? base : { ...base, g, all };
    };
    if (options.ack === true) {
      const targets: [PlanTarget, WireBody][] = plan.all.map((t) => [t, bodyFor(t, true)]);
      for (const t of groupsOf?.keys() ?? []) if (!plan.allSet.has(t)) targets.push([t, bodyFor(t, false)]);
      return this.#publishAcked(view, topic, id, targets, options);
    }
    const shared: { frame?: Buffer } = {};
    let sent = 0;
    let targets = plan.all.length;
    for (const t of plan.all) sent += this.#sendOne(t, bodyFor(t, true), topic, id, shared);
    for (const t of groupsOf?.keys() ?? []) {
      if (plan.allSet.has(t)) continue;
      targets++;
      sent += this.#sendOne(t, bodyFor(t, false), topic, id, shared);
    }
    return { id, sent, dropped: targets - sent, acked: 0 };
  }

  /** Sends one publication to one subscriber node without waiting on it: 1 if sent, 0 if dropped. */
  #sendOne(t: PlanTarget, body: WireBody, topic: string, id: string, shared: { frame?: Buffer }): number {
    if (t.address === this.#bus.address) {
      this.receive(undefined, 0, body);
      return 1;
    }
    const frame =
      body.g === undefined
        ? (shared.frame ??= checkedFrame(Kind.Publish, 0, body, this.#o.maxFrameBytes))
        : checkedFrame(Kind.Publish, 0, body, this.#o.maxFrameBytes);
    const waiting = this.#waiting.get(t.address);
    const conn = this.#bus.peers().get(t.address);
    let reason: DropEvent['reason'] | undefined;
    if (waiting === undefined && conn !== undefined && conn.state === 'open') {
      if (!conn.publishFrame(frame, topic, id)) reason = 'queue-full';
    } else if (waiting === undefined && this.#bus.isDown(t.address)) {
      reason = 'not-connected';
    } else if (!this.#queueWhileConnecting(t, topic, id, frame)) {
      reason = 'queue-full';
    }
    if (reason === undefined) return 1;
    this.#drop(t.node, topic, id, reason);
    return 0;
  }

  async #publishAcked(
    view: InstanceView,
    topic: string,
    id: string,
    targets: readonly (readonly [PlanTarget, WireBody])[],
    options: BusPublishOptions,
  ): Promise<PublishResult> {
    let acked = 0;
    let dropped = 0;
    const deadline =
      this.#o.clock.monotonic() +
      (options.timeout === undefined ? this.#o.callTimeoutMs : toMillis(options.timeout, 'timeout'));
    await Promise.all(
      targets.map(async ([t, body]) => {
        if (t.address === this.#bus.address) {
          this.receive(undefined, 0, body);
          acked++;
        } else if (await this.#sendAcked(t, body, deadline, view)) acked++;
        else {
          dropped++;
          this.#drop(t.node, topic, id, 'not-acknowledged');
        }
      }),
    );
    return { id, sent: acked, dropped, acked };
  }

  /**
   * Sends `body` to `t` until it acknowledges, the deadline passes, or `t` leaves the topic. A lost
   * connection is re-opened and the message sent again (the subscriber de-duplicates by id).
   */
  async #sendAcked(
    t: { address: string; node: string },
    body: WireBody,
    deadline: number,
    view: InstanceView,
  ): Promise<boolean> {
    for (;;) {
      const left = deadline - this.#o.clock.monotonic();
      if (left <= 0) return false;
      if (view.get(t.node)?.address !== t.address) return false; // it left the topic
      try {
        const conn = await this.#bus.connection(t.address, Math.min(left, this.#o.connectTimeoutMs));
        await conn.publishAcked(body, left);
        return true;
      } catch (err) {
        if (isMusterError(err, 'MUSTER_FRAME_TOO_LARGE')) throw err;
        await this.#o.clock.sleep(
          Math.min(RESEND_DELAY_MS, Math.max(0, deadline - this.#o.clock.monotonic())),
        );
      }
    }
  }

  /** Queues `frame` behind the connect to `t` (starting it); false at the bound. */
  #queueWhileConnecting(
    t: { address: string; node: string },
    topic: string,
    id: string,
    frame: Buffer,
  ): boolean {
    let w = this.#waiting.get(t.address);
    if (w === undefined) {
      const entry: Waiting = { frames: [], bytes: 0 };
      w = entry;
      this.#waiting.set(t.address, entry);
      this.#bus.connection(t.address, this.#o.connectTimeoutMs).then(
        (conn) => {
          this.#waiting.delete(t.address);
          const refused = entry.frames.filter((f) => !conn.publishFrame(f.frame, f.topic, f.id));
          this.#dropMany(t.node, refused, conn.state === 'open' ? 'queue-full' : 'not-connected');
        },
        () => {
          this.#waiting.delete(t.address);
          this.#dropMany(t.node, entry.frames, 'not-connected');
        },
      );
    }
    if (w.bytes + frame.length > this.#o.maxQueueBytes) return false;
    w.frames.push({ frame, node: t.node, topic, id });
    w.bytes += frame.length;
    return true;
  }

  /**
   * Publications written to a connection that closed before the subscriber confirmed them: maybe
   * delivered, maybe lost — reported as `unconfirmed`, never left counted as sent.
   */
  unconfirmed(conn: Connection, lost: readonly { topic: string; id: string }[]): void {
    this.#dropMany(conn.peer?.node ?? conn.address ?? '?', lost, 'unconfirmed');
  }

  /**
   * Many drops for one peer at once (a connection closing with publications unconfirmed, a connect
   * failing with publications queued behind it): an event per message, but one counter increment
   * and one log line per topic — thousands of them must not stall the publisher, and through it the
   * other subscribers.
   */
  #dropMany(
    peer: string,
    items: readonly { topic: string; id: string }[],
    reason: DropEvent['reason'],
  ): void {
    if (items.length === 0) return;
    const perTopic = new Map<string, number>();
    for (const l of items) {
      perTopic.set(l.topic, (perTopic.get(l.topic) ?? 0) + 1);
      this.#onDrop({ peer, topic: l.topic, id: l.id, reason });
    }
    for (const [topic, n] of perTopic) {
      this.#bus.metrics.dropped(peer, topic, reason, n);
      this.#o.logger.warn(
        { peer, topic, count: n, reason },
        reason === 'unconfirmed'
          ? `bus: ${n} message(s) for ${peer} were written to a connection that closed before ${peer} confirmed them (maybe delivered)`
          : `bus: dropped ${n} message(s) for ${peer} (${reason})`,
      );
    }
  }

  #drop(peer: string, topic: string, id: string, reason: DropEvent['reason']): void {
    this.#bus.metrics.dropped(peer, topic, reason);
    this.#onDrop({ peer, topic, id, reason });
    // Logged too, at most once per peer and second (the counter has the exact figure).
    const now = this.#o.clock.monotonic();
    if ((this.#lastLogged.get(peer) ?? -Infinity) + 1000 <= now) {
      this.#lastLogged.set(peer, now);
      this.#o.logger.warn({ peer, topic, id, reason }, `bus: dropped a message for ${peer} (${reason})`);
    }
  }

  async close(): Promise<void> {
    const members = [...this.#topics.values()].map((t) => t.member);
    this.#topics.clear();
    await Promise.allSettled(members.map((m) => m?.leave() ?? Promise.resolve()));
  }
}

interface PlanTarget {
  readonly address: string;
  readonly node: string;
}

interface Plan {
  readonly source: readonly unknown[];
  /** Nodes with plain subscribers. */
  readonly all: readonly PlanTarget[];
  readonly allSet: ReadonlySet<PlanTarget>;
  /** Queue groups and their member nodes (in id order). */
  readonly groups: readonly (readonly [string, readonly PlanTarget[]])[];
}

interface Waiting {
  readonly frames: { frame: Buffer; node: string; topic: string; id: string }[];
  bytes: number;
}

function tagsOf(local: LocalTopic): string[] {
  const tags = new Set<string>();
  for (const s of local.subs) tags.add(s.group === undefined ? ALL_TAG : `${GROUP_TAG}${s.group}`);
  return [...tags].sort();
}

/** FNV-1a, 32 bits: a stable, cheap choice of queue-group member. */
function hashString(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}
