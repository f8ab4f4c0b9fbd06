import assert from 'node:assert/strict';
import { afterEach, describe, test } from 'node:test';
import { readPartitionStatus } from '../../src/partitions/index.js';
import { Sim } from './sim.js';

let sim: Sim | undefined;
afterEach(async () => {
  await sim?.close();
  sim = undefined;
});

describe('partition ownership on the memory engine (manual clock)', () => {
  test('a fleet converges to exactly one owner per partition, balanced', async () => {
    sim = new Sim({ partitions: 64 });
    for (const id of ['a', 'b', 'c', 'd']) await sim.join(id);
    await sim.converge();
    const status = await readPartitionStatus(sim.store, 'svc');
    for (const i of status.instances) assert.ok(i.owned >= 14 && i.owned <= 18, `${i.id} owns ${i.owned}`);
    const result = sim.check();
    assert.ok(result.transitions >= 64);
    for (const m of sim.members.values()) {
      for (const [p, { token }] of m.handle.assumed) {
        assert.equal(status.partitions.find((r) => r.partition === p)?.token, token);
      }
    }
  });

  test('graceful leave hands partitions over within milliseconds', async () => {
    sim = new Sim({ partitions: 32 });
    for (const id of ['a', 'b', 'c']) await sim.join(id);
    await sim.converge();
    const leaving = sim.members.get('b')!;
    sim.members.delete('b');
    await leaving.handle.leave();
    assert.equal(leaving.handle.state, 'closed');
    const took = await sim.converge();
    assert.ok(took <= 200, `hand-off took ${took} ms of manual time`);
    sim.check();
  });

  test('a leave is taken over before the moves it causes only to rebalance (and the checker catches the reverse)', async () => {
    // Three instances on 32 partitions: when c leaves, a's and b's fair shares grow and one partition
    // returns to its first choice — a move of a partition that has a working owner. It waits until
    // every partition c owned has a new owner. c's work takes 300 ms to stop, so a move started at
    // the leave (as before) would be released long before the take-over.
    sim = new Sim({ partitions: 32 });
    const clock = sim.clock;
    await sim.join('a');
    await sim.join('b');
    await sim.join('c', sim.slowStop(300));
    await sim.converge();
    const events: MoveEvent[] = [];
    for (const m of sim.members.values()) {
      m.handle.on('acquired', (partition) =>
        events.push({ type: 'acquired', t: clock.monotonic(), instance: m.id, partition }),
      );
      m.handle.on('released', (partition) =>
        events.push({ type: 'released', t: clock.monotonic(), instance: m.id, partition }),
      );
    }
    const c = sim.members.get('c')!;
    const held = [...c.handle.assumed.keys()];
    sim.members.delete('c');
    const left = c.handle.leave(); // c's stop sleeps on the manual clock: converge() moves it
    await sim.converge();
    await left;
    const result = checkTakeoverFirst(events, 'c', held);
    assert.ok(result.rebalancing >= 1, 'the leave caused no rebalancing move: the test shows nothing');
    assert.deepEqual(result.violations, []);
    // The checker fails on the order a rebalancing move started at the leave produced.
    const reversed = checkTakeoverFirst(
      [
        { type: 'released', t: 50, instance: 'a', partition: 'x' },
        { type: 'acquired', t: 310, instance: 'a', partition: 'y' },
      ],
      'c',
      ['y'],
    );
    assert.equal(reversed.violations.length, 1);
  });

  test('a leave that hangs holds rebalancing back for 10 s, not for good', async () => {
    // As above, but c's work takes 40 s to stop (within its stop timeout): c stays `leaving`, its
    // partitions owned. The rebalancing move waits LEAVE_FIRST_MS (10 s), then goes ahead.
    sim = new Sim({ partitions: 32 });
    const clock = sim.clock;
    await sim.join('a');
    await sim.join('b');
    await sim.join('c', sim.slowStop(40_000));
    await sim.converge();
    const releases: number[] = [];
    for (const id of ['a', 'b'])
      sim.members.get(id)!.handle.on('released', () => releases.push(clock.monotonic()));
    const c = sim.members.get('c')!;
    sim.members.delete('c');
    const from = clock.monotonic();
    const left = c.handle.leave();
    await sim.run(9_500);
    assert.deepEqual(releases, [], 'a rebalancing move went ahead while the leave was under way');
    await sim.run(1_500);
    assert.equal(c.handle.state, 'leaving');
    assert.ok(releases.length >= 1, 'rebalancing still held back 11 s into a hung leave');
    assert.ok(
      releases.every((t) => t - from >= 10_000),
      `released at ${releases.map((t) => t - from).join(', ')} ms`,
    );
    await sim.run(30_000);
    await left;
    await sim.converge();
  });

  test('leaves that follow one another hold rebalancing back for 10 s in a row, not each 10 s more', async () => {
    // b leaves, then d 6 s later, both hanging (their work takes 40 s to stop): a's and c's moves
    // wait 10 s from the first leave, not until 16 s.
    sim = new Sim({ partitions: 64 });
    const clock = sim.clock;
    const slow = sim.slowStop(40_000);
    await sim.join('a');
    await sim.join('b', slow);
    await sim.join('c');
    await sim.join('d', slow);
    await sim.converge();
    const releases: number[] = [];
    for (const id of ['a', 'c'])
      sim.members.get(id)!.handle.on('released', () => releases.push(clock.monotonic()));
    const from = clock.monotonic();
    const leaves: Promise<void>[] = [];
    for (const id of ['b', 'd']) {
      const m = sim.members.get(id)!;
      sim.members.delete(id);
      leaves.push(m.handle.leave());
      if (id === 'b') await sim.run(6_000);
    }
    await sim.run(3_500);
    assert.deepEqual(releases, [], 'a rebalancing move went ahead while the leaves were under way');
    await sim.run(1_500);
    assert.ok(releases.length >= 1, 'rebalancing still held back 11 s after the first leave');
    assert.ok(
      releases.every((t) => t - from >= 10_000),
      `released at ${releases.map((t) => t - from).join(', ')} ms`,
    );
    await sim.run(40_000);
    await Promise.all(leaves);
    await sim.converge();
  });

  test('an instance that leaves and rejoins under the same id is not waited for as a leave', async () => {
    // A rolling restart with fixed ids: c leaves and joins again at once (with a larger weight, so
    // that a and b must move partitions to it: rebalancing), and the new c — a new lease — takes
    // partitions the old one held before a and b see them free (they are cut off from the store
    // meanwhile). Owned by "c" again, those partitions are not the old leave still under way: a's
    // and b's moves wait only until the old c's other partitions are taken, not LEAVE_FIRST_MS.
    sim = new Sim({ partitions: 32 });
    await sim.join('a');
    await sim.join('b');
    await sim.join('c', sim.slowStop(300));
    await sim.converge();
    const c = sim.members.get('c')!;
    sim.members.delete('c');
    const left = c.handle.leave();
    await sim.run(100); // a and b have seen c leaving
    for (const id of ['a', 'b']) sim.members.get(id)!.faulty.blackhole();
    await sim.run(300);
    await left;
    await sim.join('c', { weight: 3 });
    await sim.run(300);
    let moves = 0;
    for (const id of ['a', 'b']) sim.members.get(id)!.handle.on('released', () => moves++);
    for (const id of ['a', 'b']) sim.members.get(id)!.faulty.heal();
    const took = await sim.converge();
    assert.ok(moves >= 1, 'a and b moved nothing to the rejoined c: the test shows nothing');
    assert.ok(took < 5_000, `the fleet converged ${took} ms after the rejoin`);
    sim.check({ converged: true });
  });

  test('a crashed instance (cut off for good) is replaced after its lease expires, never before', async () => {
    sim = new Sim({ partitions: 32 });
    for (const id of ['a', 'b', 'c']) await sim.join(id);
    await sim.converge();
    sim.crash('c');
    const took = await sim.converge();
    assert.ok(took >= 2000 && took <= 3600, `failover took ${took} ms`);
    sim.check();
  });

  test('a black-holed instance stops by its deadline, rejoins after healing, and the fleet rebalances', async () => {
    sim = new Sim({ partitions: 32 });
    for (const id of ['a', 'b', 'c']) await sim.join(id);
    await sim.converge();
    const b = sim.members.get('b')!;
    const states: string[] = [];
    b.handle.on('state', (s) => states.push(s));
    b.faulty.blackhole();
    await sim.run(4000);
    assert.equal(b.handle.assumed.size, 0, 'a cut-off instance must not believe it owns anything');
    assert.equal(b.handle.state, 'lost');
    b.faulty.heal();
    await sim.converge();
    assert.deepEqual(states, ['lost', 'active']);
    assert.ok(b.handle.assumed.size > 0, 'b took partitions again after rejoining');
    sim.check();
  });

  test('a drain outlives a lost session: it does not reject, and the instance rejoins draining and takes nothing', async () => {
    // The postgres churn found this: drain() called while the session was being lost rejected with
    // MUSTER_SESSION_LOST (its caller crashed), and the rejoin came back `active` and took partitions.
    sim = new Sim({ partitions: 32 });
    for (const id of ['a', 'b', 'c']) await sim.join(id);
    await sim.converge();
    const b = sim.members.get('b')!;
    const states: string[] = [];
    b.handle.on('state', (s) => states.push(s));
    b.faulty.blackhole();
    const drained = b.handle.drain();
    await sim.run(4000);
    assert.equal(b.handle.state, 'lost');
    b.faulty.heal();
    await sim.run(4000);
    await drained;
    assert.deepEqual(states, ['draining', 'lost', 'draining']);
    assert.equal(b.handle.assumed.size, 0, 'a draining instance takes nothing after it rejoins');
    const status = await readPartitionStatus(sim.store, 'svc');
    assert.equal(status.instances.find((i) => i.id === 'b')?.state, 'draining');
    const owners = new Set(status.partitions.map((p) => p.owner));
    assert.ok(!owners.has('b') && !owners.has(null), `owners: ${[...owners].join(', ')}`);
    sim.check({ converged: false });
  });

  test('drain moves partitions away at the throttle pace, then the instance owns nothing', async () => {
    sim = new Sim({ partitions: 48 });
    await sim.join('a', { maxConcurrentMoves: 2 });
    await sim.join('b');
    await sim.join('c');
    await sim.converge();
    const a = sim.members.get('a')!;
    const before = a.handle.assumed.size;
    assert.ok(before > 0);
    const from = sim.history.events.length;
    const drained = a.handle.drain();
    await sim.run(2000);
    await drained;
    // stops and releases of a, in order: at most maxConcurrentMoves (2) stopped-but-unreleased at once
    let inFlight = 0;
    let peak = 0;
    let stops = 0;
    for (const e of sim.history.events.slice(from)) {
      if (e.instance !== 'a') continue;
      if (e.type === 'stop') {
        inFlight++;
        stops++;
      }
      if (e.type === 'release') inFlight--;
      peak = Math.max(peak, inFlight);
    }
    assert.equal(stops, before);
    assert.ok(peak <= 2, `peak concurrent hand-offs ${peak}`);
    assert.equal(a.handle.assumed.size, 0);
    assert.equal(a.handle.state, 'draining');
    sim.check({ converged: false });
    sim.members.delete('a');
    await a.handle.leave();
    await sim.converge();
    sim.check();
  });

  test('a failing instance gets no partitions; pins move a partition to a named instance', async () => {
    sim = new Sim({ partitions: 24 });
    for (const id of ['a', 'b', 'c']) await sim.join(id);
    await sim.converge();
    // pin partition 0 to c
    await sim.store.put('/muster/services/svc/pins/0', JSON.stringify({ instance: 'c' }));
    await sim.converge();
    let status = await readPartitionStatus(sim.store, 'svc');
    assert.equal(status.partitions.find((p) => p.partition === '0')?.owner, 'c');
    // mark b failing: its record is rewritten with health failing (as its checks would)
    const kv = await sim.store.get('/muster/services/svc/instances/b');
    const record = JSON.parse(new TextDecoder().decode(kv!.value)) as Record<string, unknown>;
    await sim.store.put(
      '/muster/services/svc/instances/b',
      JSON.stringify({ ...record, health: 'failing' }),
      {
        lease: kv!.lease,
      },
    );
    await sim.run(1000);
    status = await readPartitionStatus(sim.store, 'svc');
    assert.equal(status.instances.find((i) => i.id === 'b')?.owned, 0);
    assert.ok(status.partitions.every((p) => p.owner !== null && p.owner !== 'b'));
    sim.check({ converged: false });
  });

  test('a health check that fails drains the instance (unhealthy: drain)', async () => {
    sim = new Sim({ partitions: 24 });
    await sim.join('a');
    await sim.join('b', {
      checks: [{ kind: 'ttl', name: 'heartbeat', ttl: '2s', initialStatus: 'passing' }],
    });
    await sim.run(500);
    const b = sim.members.get('b')!;
    assert.ok(b.handle.assumed.size > 0, 'b works while its check has not failed yet');
    await sim.run(3000);
    assert.equal(b.handle.assumed.size, 0, 'b gave its partitions away once its TTL check failed');
    const status = await readPartitionStatus(sim.store, 'svc');
    assert.ok(status.partitions.every((p) => p.owner === 'a'));
    sim.check({ converged: false });
  });

  test('an instance with a different partition set overrides the spec (Update Partitions)', async () => {
    sim = new Sim({ partitions: 8 });
    await sim.join('a');
    await sim.converge();
    const warnings: string[] = [];
    await sim.join('b', {
      partitions: 12,
      logger: { info: () => undefined, warn: (_o, m) => warnings.push(m), error: () => undefined },
    });
    assert.equal(warnings.length, 1);
    assert.match(warnings[0]!, /UPDATE PARTITIONS/);
    await sim.run(1000);
    const status = await readPartitionStatus(sim.store, 'svc');
    assert.equal(status.partitions.length, 12);
    assert.ok(status.partitions.every((p) => p.settled));
  });

  test('random churn: crashes, black holes, leaves, drains and joins keep at most one owner', async () => {
    sim = new Sim({ partitions: 40 });
    let seed = 12345;
    const rand = (n: number): number => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    let next = 0;
    for (let i = 0; i < 4; i++) await sim.join(`i${next++}`);
    await sim.converge();
    for (let round = 0; round < 12; round++) {
      const ids = [...sim.members.keys()];
      const victim = ids[rand(ids.length)]!;
      const action = rand(5);
      if (action === 0 && ids.length > 2) sim.crash(victim);
      else if (action === 1 && ids.length > 2) {
        const m = sim.members.get(victim)!;
        sim.members.delete(victim);
        await m.handle.leave();
      } else if (action === 2) {
        const m = sim.members.get(victim)!;
        m.faulty.blackhole();
        await sim.run(1000 + rand(4000));
        m.faulty.heal();
      } else if (action === 3 && ids.length > 2) {
        const m = sim.members.get(victim)!;
        void m.handle.drain();
        await sim.run(rand(300));
        sim.members.delete(victim);
        await m.handle.leave();
      } else await sim.join(`i${next++}`);
      await sim.run(rand(2000));
      if (sim.members.size < 3) await sim.join(`i${next++}`);
    }
    await sim.converge();
    if (process.env.DEBUG_SIM) {
      for (const e of sim.history.events)
        if ('partition' in e && e.partition === '8') console.log(JSON.stringify(e));
    }
    const result = sim.check();
    assert.ok(result.transitions > 80, `only ${result.transitions} transitions`);
  });
});

interface MoveEvent {
  readonly type: 'acquired' | 'released';
  readonly t: number;
  readonly instance: string;
  readonly partition: string;
}

/**
 * After `leaver` left holding `held`: the releases by other instances of partitions it did not hold
 * (moves that only rebalance) that completed before every one of `held` was acquired by another
 * instance.
 */
function checkTakeoverFirst(
  events: readonly MoveEvent[],
  leaver: string,
  held: readonly string[],
): { rebalancing: number; violations: string[] } {
  const takenAt = new Map<string, number>();
  for (const e of events) {
    if (
      e.type === 'acquired' &&
      e.instance !== leaver &&
      held.includes(e.partition) &&
      !takenAt.has(e.partition)
    )
      takenAt.set(e.partition, e.t);
  }
  const rebalancing = events.filter(
    (e) => e.type === 'released' && e.instance !== leaver && !held.includes(e.partition),
  );
  const missing = held.filter((p) => !takenAt.has(p));
  if (missing.length > 0)
    return { rebalancing: rebalancing.length, violations: [`never taken over: ${missing.join(', ')}`] };
  const takenOver = Math.max(...takenAt.values());
  return {
    rebalancing: rebalancing.length,
    violations: rebalancing
      .filter((e) => e.t < takenOver)
      .map(
        (e) =>
          `${e.instance} released ${e.partition} at ${e.t} ms, before the take-over ended at ${takenOver} ms`,
      ),
  };
}
