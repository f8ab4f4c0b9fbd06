import assert from 'node:assert/strict';
import { createServer as createTcpServer, connect } from 'node:net';
import { describe, test } from 'node:test';
import { ManualClock } from '../../src/clock.js';
import { isMusterError } from '../../src/errors.js';
import { Balancer, join, listenAndJoin, type Member, watchInstances } from '../../src/membership/index.js';
import { MemoryStore } from '../../src/store/index.js';
import { waitFor } from '../../src/testing/index.js';

async function fleet(
  weights: Record<string, number>,
): Promise<{ mem: MemoryStore; clock: ManualClock; members: Map<string, Member> }> {
  const clock = new ManualClock();
  const mem = new MemoryStore({ clock });
  const members = new Map<string, Member>();
  for (const [id, weight] of Object.entries(weights)) {
    members.set(
      id,
      await join(mem, { service: 'api', id, weight, address: `127.0.0.1:${1000 + members.size}`, clock }),
    );
  }
  return { mem, clock, members };
}

function counts(pick: () => string, n: number): Record<string, number> {
  const out: Record<string, number> = {};
  for (let i = 0; i < n; i++) {
    const id = pick();
    out[id] = (out[id] ?? 0) + 1;
  }
  return out;
}

describe('discovery', () => {
  test('round-robin follows weights exactly and interleaves (smooth weighted round-robin)', async () => {
    const { mem, clock } = await fleet({ a: 1, b: 2, c: 3 });
    const view = watchInstances(mem, 'api', { clock });
    await view.ready;
    const lb = new Balancer(view);
    assert.deepEqual(
      counts(() => lb.pick().id, 600),
      { a: 100, b: 200, c: 300 },
    );
    const seq = Array.from({ length: 6 }, () => lb.pick().id).join('');
    assert.ok(!/ccc/.test(seq), `interleaved: ${seq}`);
    view.close();
  });

  test('draining, failing and weight-0 instances get nothing; warning ones only when nothing passes', async () => {
    const { mem, clock, members } = await fleet({ a: 1, b: 1, c: 1, d: 0 });
    const view = watchInstances(mem, 'api', { clock });
    await view.ready;
    const lb = new Balancer(view);
    await members.get('a')?.drain();
    const c = members.get('c') as Member;
    const check = c.checks.add({ kind: 'ttl', name: 'w', ttl: '1h', initialStatus: 'passing' });
    check.warn();
    await waitFor(() => view.get('a')?.state === 'draining' && view.get('c')?.health === 'warning');
    assert.deepEqual(
      counts(() => lb.pick().id, 10),
      { b: 10 },
    );
    await members.get('b')?.update({ weight: 0 });
    await waitFor(() => view.get('b')?.weight === 0);
    assert.deepEqual(
      counts(() => lb.pick().id, 4),
      { c: 4 },
      'a warning instance is used when none passes',
    );
    check.fail();
    await waitFor(() => view.get('c')?.health === 'failing');
    assert.throws(
      () => lb.pick(),
      (err) => isMusterError(err, 'MUSTER_NO_HEALTHY_INSTANCE') && err.retryable,
    );
    view.close();
  });

  test('least-recently-failed avoids instances that failed, oldest failure first', async () => {
    const { mem, clock } = await fleet({ a: 1, b: 1, c: 1 });
    const view = watchInstances(mem, 'api', { clock });
    await view.ready;
    const lb = new Balancer(view, { strategy: 'least-recently-failed', clock });
    assert.deepEqual(
      counts(() => lb.pick().id, 6),
      { a: 2, b: 2, c: 2 },
      'no failures: round-robin',
    );
    lb.reportFailure('a');
    clock.advance(10);
    lb.reportFailure('b');
    assert.deepEqual(
      counts(() => lb.pick().id, 3),
      { c: 3 },
    );
    clock.advance(10);
    lb.reportFailure('c');
    assert.equal(lb.pick().id, 'a', 'a failed longest ago');
    lb.reportSuccess('b');
    assert.equal(lb.pick().id, 'b');
    assert.throws(
      () => new Balancer(view, { strategy: 'random' as 'round-robin' }),
      (e) => isMusterError(e, 'MUSTER_INVALID_ARGUMENT'),
    );
    view.close();
  });

  test('listenAndJoin registers the port the OS chose, and callers reach it through discovery', async () => {
    const mem = new MemoryStore();
    const server = createTcpServer((s) => s.end('hello'));
    const member = await listenAndJoin(mem, server, { service: 'echo', id: 'e1' });
    const view = watchInstances(mem, 'echo');
    await view.ready;
    const picked = new Balancer(view).pick();
    const port = (server.address() as { port: number }).port;
    assert.notEqual(port, 0);
    assert.equal(picked.address, `127.0.0.1:${port}`);
    const [host, p] = picked.address.split(':') as [string, string];
    const reply = await new Promise<string>((resolve, reject) => {
      const sock = connect(Number(p), host);
      let data = '';
      sock.on('data', (d) => (data += d.toString()));
      sock.on('end', () => resolve(data));
      sock.on('error', reject);
    });
    assert.equal(reply, 'hello');
    await member.leave();
    view.close();
    await new Promise((r) => server.close(r));

    // A failed join closes the server again.
    const other = createTcpServer();
    const dup = await join(mem, { service: 'echo', id: 'taken' });
    await assert.rejects(listenAndJoin(mem, other, { service: 'echo', id: 'taken' }), (e) =>
      isMusterError(e, 'MUSTER_DUPLICATE_INSTANCE'),
    );
    assert.equal(other.listening, false);
    await dup.leave();
    await mem.close();
  });
});
