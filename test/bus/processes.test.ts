/**
 * The bus across real processes over `muster serve`: kill -9 of a server with calls in flight, a
 * SIGSTOPped peer, publishers killed mid-stream, and owner-routed calls through hand-offs judged by
 * the ownership checker.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join as pathJoin } from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, describe, test } from 'node:test';
import { type Bus, openBus } from '../../src/bus/index.js';
import { isMusterError, type MusterError } from '../../src/errors.js';
import { readPartitionStatus } from '../../src/partitions/index.js';
import { openStore } from '../../src/store/index.js';
import type { Store } from '../../src/store/types.js';
import {
  checkOwnership,
  describeViolations,
  readHistory,
  startTempServe,
  type TempServe,
  waitFor,
} from '../../src/testing/index.js';

const FIXTURE = new URL('./fixtures/node.js', import.meta.url).pathname;
const quiet = { info: () => undefined, warn: () => undefined, error: () => undefined };

interface Child {
  readonly child: ChildProcess;
  readonly id: string;
  readonly lines: Record<string, unknown>[];
  readonly exited: Promise<void>;
}

const children = new Set<ChildProcess>();

async function spawnNode(url: string, args: string[]): Promise<Child> {
  const child = spawn(process.execPath, [FIXTURE, '--store', url, ...args], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  children.add(child);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  void exited.then(() => children.delete(child));
  const lines: Record<string, unknown>[] = [];
  const rl = createInterface({ input: child.stdout as NodeJS.ReadableStream });
  const ready = await new Promise<{ id: string }>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`node ${args.join(' ')} not ready within 20 s`)), 20_000);
    child.once('exit', (code) => reject(new Error(`node exited with ${code} before it was ready`)));
    rl.on('line', (line) => {
      const msg = JSON.parse(line) as Record<string, unknown>;
      lines.push(msg);
      if (msg.ready === true) {
        clearTimeout(timer);
        resolve(msg as { id: string });
      }
    });
  });
  return { child, id: ready.id, lines, exited };
}

function runCli(args: readonly string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  const bin = new URL('../../../bin/muster.js', import.meta.url).pathname;
  const child = spawn(process.execPath, [bin, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve) => child.once('close', (status) => resolve({ status, stdout, stderr })));
}

function rejection(p: Promise<unknown>): Promise<MusterError> {
  return p.then(
    () => assert.fail('expected a rejection'),
    (err: unknown) => {
      assert.ok(isMusterError(err), String(err));
      return err;
    },
  );
}

describe('bus across processes', () => {
  let serve: TempServe;
  let store: Store;
  let client: Bus;
  before(async () => {
    serve = await startTempServe();
    store = await openStore(serve.url);
    client = await openBus(store, { id: 'client', logger: quiet });
  });
  after(async () => {
    for (const c of children) c.kill('SIGKILL');
    await client?.close();
    await store?.close();
    await serve?.close();
  });

  test(
    'kill -9 of a server: its in-flight calls fail fast, the next call lands on a live instance',
    { timeout: 60_000 },
    async (t) => {
      const a = await spawnNode(serve.url, ['--role', 'server', '--service', 'k9', '--id', 'k9-a']);
      const b = await spawnNode(serve.url, ['--role', 'server', '--service', 'k9', '--id', 'k9-b']);
      const view = await client.instances('k9');
      await waitFor(() => view.size === 2, { what: 'both servers in the view' });
      // Calls in flight on both (round-robin), until one is on each.
      const inflight: Promise<unknown>[] = [];
      for (let i = 0; i < 4; i++)
        inflight.push(client.call('k9', 'hang', i, { timeout: 30_000 }).catch((e: unknown) => e));
      await waitFor(() => client.peers().size >= 2, { what: 'connections to both servers' });
      const killedAt = performance.now();
      a.child.kill('SIGKILL');
      const failed = await Promise.race(inflight);
      const failedAfter = performance.now() - killedAt;
      assert.ok(isMusterError(failed, 'MUSTER_PEER_LOST'), String(failed));
      // The goal (issue 17) is ≤ 50 ms after the close; the bound here leaves room for a loaded CI
      // machine, and the figure is reported (calls fail in the socket's 'close' handler itself).
      t.diagnostic(`in-flight call failed ${failedAfter.toFixed(1)} ms after the kill -9`);
      assert.ok(failedAfter < 1000, `in-flight call failed ${failedAfter.toFixed(0)} ms after the kill`);
      // The dead instance's record is still there (lease not yet expired), yet calls land on b.
      assert.equal(view.size, 2);
      for (let i = 0; i < 5; i++)
        assert.equal(await client.call('k9', 'whoami', null, { timeout: 2000 }), 'k9-b');
      b.child.kill('SIGKILL');
      await Promise.all([a.exited, b.exited]);
    },
  );

  test('muster bus ls / call / tail', { timeout: 60_000 }, async () => {
    const a = await spawnNode(serve.url, ['--role', 'server', '--service', 'cli', '--id', 'cli-a']);
    const called = await runCli(['bus', 'call', 'cli', 'echo', '{"x":1}', '--store', serve.url]);
    assert.equal(called.status, 0, called.stderr);
    assert.deepEqual(JSON.parse(called.stdout), { x: 1 });
    const bad = await runCli(['bus', 'call', 'cli', 'nope', 'null', '--store', serve.url]);
    assert.equal(bad.status, 1);
    assert.match(bad.stderr, /^MUSTER_UNKNOWN_METHOD: /);
    const ls = await runCli(['bus', 'ls', '--service', 'cli', '--json', '--store', serve.url]);
    assert.equal(ls.status, 0, ls.stderr);
    const listed = JSON.parse(ls.stdout) as {
      services: { id: string; methods: Record<string, { requests: number }> }[];
    };
    assert.equal(listed.services[0]?.id, 'cli-a');
    assert.equal(listed.services[0]?.methods.echo?.requests, 1);
    const tail = runCli(['bus', 'tail', 'cli-topic', '--count', '1', '--store', serve.url]);
    const view = await client.instances('topic.cli-topic');
    // A CLI process starting on a loaded machine (load 13 on 2 cores took over 5 s once): wait for
    // its subscription as long as the test allows.
    await waitFor(() => view.size === 1, { what: 'tail subscribed', timeoutMs: 40_000 });
    await client.publish('cli-topic', { hello: 1 });
    const tailed = await tail;
    assert.equal(tailed.status, 0, tailed.stderr);
    assert.deepEqual((JSON.parse(tailed.stdout) as { message: unknown }).message, { hello: 1 });
    a.child.kill('SIGKILL');
    await a.exited;
  });

  test('SIGSTOP of a peer is detected by the heartbeat within 2 s', { timeout: 60_000 }, async (t) => {
    const a = await spawnNode(serve.url, ['--role', 'server', '--service', 'stop', '--id', 'stop-a']);
    assert.equal(await client.call('stop', 'whoami'), 'stop-a');
    const call = rejection(client.call('stop', 'hang', null, { timeout: 30_000 }));
    await new Promise((r) => setTimeout(r, 50));
    const stoppedAt = performance.now();
    a.child.kill('SIGSTOP');
    const err = await call;
    const detectedAfter = performance.now() - stoppedAt;
    assert.equal(err.code, 'MUSTER_PEER_LOST', err.message);
    t.diagnostic(`SIGSTOP detected after ${detectedAfter.toFixed(0)} ms`);
    assert.ok(detectedAfter <= 2000, `detected after ${detectedAfter.toFixed(0)} ms`);
    a.child.kill('SIGCONT');
    a.child.kill('SIGKILL');
    await a.exited;
  });

  test(
    'a kill -9d publisher, restarted, resumes: the subscribers get its new messages',
    { timeout: 90_000 },
    async () => {
      const subs = await Promise.all([
        spawnNode(serve.url, ['--role', 'subscriber', '--topic', 'restart']),
        spawnNode(serve.url, ['--role', 'subscriber', '--topic', 'restart']),
      ]);
      const publisher = (prefix: string, count: number): Promise<Child> =>
        spawnNode(serve.url, [
          '--role',
          'publisher',
          '--id',
          'pub-restart',
          '--topic',
          'restart',
          '--prefix',
          prefix,
          '--count',
          String(count),
          '--interval',
          '10',
        ]);
      const gotOf = (s: Child): string[] =>
        s.lines.filter((l) => l.got !== undefined).map((l) => l.got as string);
      const first = await publisher('before', 100_000);
      await waitFor(() => subs.every((s) => gotOf(s).filter((g) => g.startsWith('before-')).length >= 20), {
        timeoutMs: 20_000,
        what: 'both subscribers receiving the first incarnation',
      });
      first.child.kill('SIGKILL');
      await first.exited;
      // The same publisher (same id) starts again, on a new port, with new message ids.
      const count = 50;
      const second = await publisher('after', count);
      await waitFor(() => second.lines.some((l) => l.done === true), {
        timeoutMs: 30_000,
        what: 'the restarted publisher done',
      });
      const sent = second.lines.filter((l) => l.sent !== undefined);
      assert.equal(sent.length, count);
      // It reached both subscribers with every message (none dropped on its side).
      assert.ok(
        sent.every((l) => l.to === 2 && l.dropped === 0),
        JSON.stringify(sent.find((l) => l.to !== 2 || l.dropped !== 0)),
      );
      for (const s of subs) {
        await waitFor(() => gotOf(s).filter((g) => g.startsWith('after-')).length >= count, {
          timeoutMs: 10_000,
          what: 'subscriber has every message of the restarted publisher',
        });
        const after = gotOf(s).filter((g) => g.startsWith('after-'));
        assert.deepEqual(
          [...after].sort(),
          Array.from({ length: count }, (_, i) => `after-${i}`).sort(),
          'each new message exactly once',
        );
        assert.ok(s.child.exitCode === null && s.child.signalCode === null, 'the subscriber stayed up');
      }
      for (const c of [...subs, second]) c.child.kill('SIGKILL');
      await Promise.all([...subs, second].map((c) => c.exited));
    },
  );

  test(
    'kill -9 of a publisher while two others publish the same ids, and of a subscriber: the other subscribers get every id once',
    { timeout: 90_000 },
    async () => {
      const [doomed, ...subs] = await Promise.all([
        spawnNode(serve.url, ['--role', 'subscriber', '--topic', 'jobs']),
        spawnNode(serve.url, ['--role', 'subscriber', '--topic', 'jobs']),
        spawnNode(serve.url, ['--role', 'subscriber', '--topic', 'jobs']),
      ]);
      const count = 150;
      const pubs = await Promise.all(
        [0, 1, 2].map(() =>
          spawnNode(serve.url, [
            '--role',
            'publisher',
            '--topic',
            'jobs',
            '--count',
            String(count),
            '--interval',
            '10',
          ]),
        ),
      );
      const victim = pubs[0] as Child;
      await waitFor(() => victim.lines.filter((l) => l.sent !== undefined).length >= 30, {
        timeoutMs: 20_000,
        what: 'the victim publishing',
      });
      victim.child.kill('SIGKILL');
      doomed.child.kill('SIGKILL');
      const live = pubs.slice(1);
      await waitFor(() => live.every((p) => p.lines.some((l) => l.done === true)), {
        timeoutMs: 60_000,
        what: 'live publishers done',
      });
      const sentByLive = new Set(
        live.flatMap((p) => p.lines.filter((l) => l.sent !== undefined).map((l) => l.sent)),
      );
      assert.equal(sentByLive.size, count);
      for (const s of subs) {
        await waitFor(
          () => new Set(s.lines.filter((l) => l.got !== undefined).map((l) => l.got)).size >= count,
          {
            timeoutMs: 10_000,
            what: 'subscriber has every id',
          },
        );
        const got = s.lines.filter((l) => l.got !== undefined).map((l) => l.got as string);
        for (const id of sentByLive) assert.ok(got.includes(id as string), `subscriber lost ${String(id)}`);
        assert.equal(got.length, new Set(got).size, 'an id was delivered twice');
      }
      for (const c of [...subs, ...pubs]) c.child.kill('SIGKILL');
      // The publishers carried on past the dead subscriber (dropped for it and counted, not blocked).
      assert.ok(live.every((p) => p.lines.some((l) => l.done === true)));
      // The publishers carried on past the dead subscriber (dropped for it, counted, not blocked).
      assert.ok(live.every((p) => p.lines.some((l) => l.done === true)));
    },
  );

  test(
    'owner-routed calls through hand-offs: every call executed by the owner whose token it carried',
    { timeout: 120_000 },
    async () => {
      const dir = mkdtempSync(pathJoin(tmpdir(), 'muster-bus-keyed-'));
      const history = pathJoin(dir, 'history.jsonl');
      const args = ['--role', 'keyed', '--service', 'kv', '--partitions', '8', '--history', history];
      try {
        const nodes: Child[] = [await spawnNode(serve.url, [...args, '--id', 'kv-0'])];
        let stop = false;
        let ok = 0;
        const failures: unknown[] = [];
        const load = (async () => {
          let i = 0;
          while (!stop) {
            const key = `user-${i++ % 97}`;
            await Promise.all(
              [0, 1, 2, 3].map((j) =>
                client.call('kv', 'exec', { i, j }, { key: `${key}-${j}`, timeout: 15_000 }).then(
                  () => ok++,
                  (err: unknown) => failures.push(err),
                ),
              ),
            );
          }
        })();
        const settled = async (): Promise<boolean> =>
          (await readPartitionStatus(store, 'kv')).partitions.every((p) => p.settled);
        const moreCalls = async (what: string): Promise<void> => {
          await waitFor(settled, { timeoutMs: 20_000, intervalMs: 50, what: `settled after ${what}` });
          const before = ok;
          await waitFor(() => ok > before + 100, { timeoutMs: 20_000, what: `calls after ${what}` });
        };
        try {
          await waitFor(() => ok > 50, { timeoutMs: 20_000, what: 'first keyed calls' });
          // Hand-offs: instances join (partitions move to them) and leave gracefully (they move on).
          for (let round = 1; round <= 8; round++) {
            nodes.push(await spawnNode(serve.url, [...args, '--id', `kv-${round}`]));
            await moreCalls(`join ${round}`);
            if (round % 2 === 0) {
              const leaving = nodes.shift() as Child;
              leaving.child.kill('SIGTERM');
              await leaving.exited;
              await moreCalls(`leave ${round}`);
            }
          }
        } finally {
          stop = true;
          await load;
        }
        for (const n of nodes) n.child.kill('SIGTERM');
        await Promise.all(nodes.map((n) => n.exited));
        assert.deepEqual(failures.map(String), [], 'keyed calls failed');
        const events = readHistory(history);
        const work = events.filter((e) => e.type === 'work').length;
        assert.ok(work >= ok, `${work} executions recorded for ${ok} answered calls`);
        // Ownerships begun after the first 8 acquisitions, before the final shutdown.
        const handOffs = events.filter((e) => e.type === 'start').length - 8;
        assert.ok(handOffs >= 20, `only ${handOffs} hand-offs`);
        const result = checkOwnership(events);
        assert.ok(result.ok, describeViolations(result.violations));
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  );
});

test('the checker catches a call executed by a stale owner', () => {
  const t = 1000;
  const events = [
    { type: 'start', t, instance: 'a', partition: '3', token: 10 },
    { type: 'work', t: t + 1, instance: 'a', partition: '3', token: 10 },
    { type: 'stop', t: t + 5, instance: 'a', partition: '3', token: 10 },
    { type: 'start', t: t + 6, instance: 'b', partition: '3', token: 12 },
    // a, no longer the owner, executes a call that carried b's token…
    { type: 'work', t: t + 7, instance: 'a', partition: '3', token: 12 },
    // …and one with its old token after its ownership ended.
    { type: 'work', t: t + 8, instance: 'a', partition: '3', token: 10 },
  ] as const;
  const result = checkOwnership([...events]);
  assert.equal(result.ok, false);
  assert.equal(result.violations.length, 2, describeViolations(result.violations));
});
