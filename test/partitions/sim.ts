/**
 * A deterministic fleet on the memory engine with a manual clock: many instances in one process,
 * each behind its own FaultyStore (so one can be cut off), all recording into one history.
 */
import { ManualClock } from '../../src/clock.js';
import {
  joinPartitioned,
  type PartitionedHandle,
  type JoinPartitionedOptions,
} from '../../src/partitions/index.js';
import { MemoryStore } from '../../src/store/index.js';
import {
  checkConvergence,
  checkOwnership,
  describeViolations,
  FaultyStore,
  MemoryHistory,
  recordingWorker,
} from '../../src/testing/index.js';
import { readPartitionStatus } from '../../src/partitions/index.js';

export const quietLogger = { info: () => undefined, warn: () => undefined, error: () => undefined };

export interface SimMember {
  readonly id: string;
  readonly handle: PartitionedHandle;
  readonly faulty: FaultyStore;
}

export class Sim {
  readonly clock = new ManualClock();
  readonly store = new MemoryStore({ clock: this.clock });
  readonly history = new MemoryHistory();
  readonly members = new Map<string, SimMember>();
  readonly service: string;
  readonly partitions: number;

  constructor(options: { service?: string; partitions?: number } = {}) {
    this.service = options.service ?? 'svc';
    this.partitions = options.partitions ?? 32;
  }

  async join(id: string, extra: Partial<JoinPartitionedOptions> = {}): Promise<SimMember> {
    const faulty = new FaultyStore(this.store);
    const now = (): number => this.clock.monotonic();
    const handle = await joinPartitioned(faulty, {
      service: this.service,
      id,
      partitions: this.partitions,
      ttl: 3000,
      retryDelay: 200,
      clock: this.clock,
      logger: quietLogger,
      onAcquire: recordingWorker({
        sink: this.history,
        instance: id,
        now,
        toHistoryTime: (m) => m,
        clock: this.clock,
        workIntervalMs: 100,
      }),
      ...extra,
    });
    handle.on('released', (partition, token) =>
      this.history.record({ type: 'release', t: now(), instance: id, partition, token }),
    );
    if (process.env.DEBUG_SIM) {
      handle.on('lost', (p, token, cause, until) =>
        console.log(JSON.stringify({ lost: id, p, token, cause, until, t: now() })),
      );
      handle.on('state', (st) => console.log(JSON.stringify({ state: st, id, t: now() })));
    }
    const member = { id, handle, faulty };
    this.members.set(id, member);
    return member;
  }

  /** Cuts an instance off from the store for good (in one process its code lives on, as a zombie). */
  crash(id: string): void {
    const m = this.members.get(id);
    if (m === undefined) return;
    m.faulty.blackhole();
    this.members.delete(id);
  }

  /**
   * Join options for an instance whose work takes `ms` of this clock to stop after its signal aborts
   * (within its stop timeout): a leave of it stays under way that long.
   */
  slowStop(ms: number): Partial<JoinPartitionedOptions> {
    const clock = this.clock;
    return {
      stopTimeout: ms + 20_000,
      onAcquire: async (_p, { signal }) => {
        await new Promise<void>((resolve) =>
          signal.addEventListener('abort', () => resolve(), { once: true }),
        );
        await clock.sleep(ms);
      },
    };
  }

  async run(ms: number, step = 20): Promise<void> {
    await this.clock.tick(ms, step);
  }

  /** Runs until every partition is owned by its assigned, live instance (or fails after `limitMs`). */
  async converge(limitMs = 30_000): Promise<number> {
    const start = this.clock.monotonic();
    while (this.clock.monotonic() - start < limitMs) {
      await this.run(100);
      if (await this.settled()) return this.clock.monotonic() - start;
    }
    const status = await readPartitionStatus(this.store, this.service);
    const bad = status.partitions.filter((p) => !p.settled).slice(0, 10);
    throw new Error(`not converged after ${limitMs} ms: ${JSON.stringify(bad)}`);
  }

  async settled(): Promise<boolean> {
    const status = await readPartitionStatus(this.store, this.service);
    const live = new Set(this.members.keys());
    if (status.partitions.some((p) => !p.settled || p.owner === null || !live.has(p.owner))) return false;
    // every live handle runs exactly what it owns in the store
    for (const m of this.members.values()) {
      const mine = status.partitions.filter((p) => p.owner === m.id).map((p) => p.partition);
      const assumed = [...m.handle.assumed.keys()];
      if (mine.length !== assumed.length || mine.some((p) => !m.handle.assumed.has(p))) return false;
    }
    return true;
  }

  /** Checks the whole history; throws with the violations. */
  check(options: { converged?: boolean } = {}): ReturnType<typeof checkOwnership> {
    const result = checkOwnership(this.history.events);
    const violations = [...result.violations];
    if (options.converged ?? true) {
      violations.push(
        ...checkConvergence(result, {
          partitions: Array.from({ length: this.partitions }, (_, i) => String(i)),
          live: [...this.members.keys()],
        }),
      );
    }
    if (violations.length > 0) throw new Error(`ownership violations:\n${describeViolations(violations)}`);
    return result;
  }

  async close(): Promise<void> {
    await Promise.all([...this.members.values()].map((m) => m.handle.close()));
    this.members.clear();
    await this.store.close();
  }
}
