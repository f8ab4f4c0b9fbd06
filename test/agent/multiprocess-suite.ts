/**
 * The agent as operators run it: `muster agent --config` processes on a real store (muster serve, a
 * 3-member etcd), with children in Node, Python and POSIX shell; kill -9 of an agent; a black-holed
 * store link; SIGHUP and `muster agent reload`; `muster status`.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { initConfig, publishConfig } from '../../src/config/index.js';
import { openStore } from '../../src/store/index.js';
import type { Store } from '../../src/store/types.js';
import {
  checkConvergence,
  checkOwnership,
  describeViolations,
  historyNow,
  readHistory,
  startFaultProxy,
  waitFor,
} from '../../src/testing/index.js';
import type { PartitionRow } from '../../src/agent/index.js';
import { DIST_FIXTURES, FIXTURES, lines, pidAlive, REPO, spawnAgent, tempDir } from './helpers.js';

const execFileAsync = promisify(execFile);
/** A store for the suite: its URL, one member's `host:port` (for the fault proxy), and how to stop it. */
export interface SuiteStore {
  readonly url: string;
  readonly endpoint: string;
  close(): Promise<void>;
}

export function agentProcessSuite(
  name: string,
  skip: string | false,
  startStore: () => Promise<SuiteStore>,
): void {
  describe(`agent processes on ${name}`, { skip }, () => {
    let serve: SuiteStore;
    let store: Store;
    before(async () => {
      serve = await startStore();
      store = await openStore(serve.url);
    });
    after(async () => {
      await store?.close();
      await serve?.close();
    });

    test(
      'children in Node, Python and sh read their identity from the environment and configuration from the API, switch included',
      { timeout: 90_000 },
      async () => {
        const dir = tempDir();
        await initConfig(store, 'pong');
        await publishConfig(store, 'pong', { n: 1 }, { in: '3.1s' });
        const out = join(dir, 'out');
        const agent = spawnAgent(
          dir,
          `store: ${serve.url}
service: langs
partitions: { names: [node, python, sh] }
stateDir: ${dir}/state
relay: { listen: ${dir}/relay.sock }
config: [pong]
run:
  command: ["/bin/sh", "-c", "case $MUSTER_PARTITION in node) exec node ${DIST_FIXTURES}lang-child.js;; python) exec python3 ${FIXTURES}lang-child.py;; sh) exec /bin/sh ${FIXTURES}lang-child.sh;; esac"]
  env: { OUT: ${out} }
  ready: { fd: 3, timeout: 20s }
  restart: { backoff: { initial: 200ms, max: 1s } }
`,
        );
        try {
          await waitFor(() => lines(out).filter((l) => l.split(' ').length === 4).length === 3, {
            timeoutMs: 30_000,
            what: `three children reporting\n${agent.log.slice(-20).join('\n')}`,
          });
          // A child writes its line before its readiness newline: wait for the agent to see all three ready.
          await waitFor(async () => (await agent.partitions()).every((r) => r.state === 'ready'), {
            timeoutMs: 20_000,
            what: 'three ready children',
          });
          const rows = await agent.partitions();
          for (const l of lines(out)) {
            const [lang, partition, token, value] = l.split(' ');
            assert.equal(lang, partition);
            assert.equal(token, String(rows.find((r) => r.partition === partition)?.token));
            assert.equal(value, '{"n":1}');
          }
          // A switch pushed over server-sent events reaches every language at its instant.
          await publishConfig(store, 'pong', { n: 2 }, { in: '3.1s' });
          await waitFor(() => lines(out).filter((l) => l.includes('switch {"n":2}')).length === 3, {
            timeoutMs: 15_000,
            what: `three switches\n${lines(out).join('\n')}`,
          });
          const stale = await agent.call('GET', '/v1/config/nope');
          assert.equal(stale.status, 404);
          assert.equal(stale.json.error.code, 'MUSTER_NOT_FOUND');
        } finally {
          agent.child.kill('SIGTERM');
          assert.equal(await agent.exited, 0, agent.log.slice(-10).join('\n'));
        }
      },
    );

    test(
      'kill -9 of an agent: every child and grandchild (ignoring SIGTERM) gone; partitions run elsewhere after the TTL; no overlap in the children’s records',
      { timeout: 90_000 },
      async () => {
        const dir = tempDir();
        const history = join(dir, 'history.jsonl');
        const yaml = (id: string): string => `store: ${serve.url}
service: k9
instance: { id: ${id} }
session: { ttl: 2s }
partitions: { count: 4 }
stateDir: ${dir}/state-${id}
relay: false
run:
  command: [node, ${DIST_FIXTURES}recording-child.js]
  env: { HISTORY: ${history}, PIDS: ${dir}/pids-${id}, IGNORE_TERM: "1" }
  ready: { fd: 3 }
  stop: { grace: 300ms }
`;
        const a = spawnAgent(dir, yaml('a'), 'a.yaml');
        const b = spawnAgent(dir, yaml('b'), 'b.yaml');
        try {
          const ready = async (p: ReturnType<typeof spawnAgent>, n: number): Promise<boolean> => {
            return (await p.partitions()).filter((x) => x.state === 'ready').length === n;
          };
          // Placement splits 4 partitions 2/2 or 3/1 (bounded load keeps current owners): both must run some.
          const count = async (p: ReturnType<typeof spawnAgent>): Promise<number> =>
            (await p.partitions()).filter((x) => x.state === 'ready').length;
          await waitFor(
            async () => {
              const [na, nb] = [await count(a), await count(b)];
              return na > 0 && nb > 0 && na + nb === 4;
            },
            { timeoutMs: 60_000, what: 'four ready children over both agents' },
          );
          const pidsOfA = (): number[] => lines(join(dir, 'pids-a')).flatMap((l) => l.split(' ').map(Number));
          const live = pidsOfA().filter(pidAlive);
          assert.equal(live.length, 2 * (await count(a)), "agent a's children and grandchildren alive");
          a.child.kill('SIGKILL');
          const killedAt = historyNow();
          await waitFor(() => pidsOfA().every((pid) => !pidAlive(pid)), {
            timeoutMs: 2000,
            intervalMs: 2,
            what: `every descendant of the killed agent gone: ${pidsOfA().filter(pidAlive).join(', ')}`,
          });
          const goneAt = historyNow();
          // The harness's record of the crash: a's ownerships end when all its descendants were seen gone.
          writeFileSync(history, `${JSON.stringify({ type: 'crash', t: goneAt, instance: 'a' })}\n`, {
            flag: 'a',
          });
          await waitFor(async () => ready(b, 4), { timeoutMs: 30_000, what: 'agent b runs all four' });
          const events = readHistory(history);
          const result = checkOwnership(events);
          assert.ok(result.ok, describeViolations(result.violations));
          const open = [...result.ownerships.values()].flat().filter((o) => o.open);
          assert.deepEqual(
            open.map((o) => o.instance),
            ['b', 'b', 'b', 'b'],
          );
          assert.deepEqual(checkConvergence(result, { live: ['b'], partitions: ['0', '1', '2', '3'] }), []);
          process.stdout.write(`# kill -9 → all descendants gone in ${(goneAt - killedAt).toFixed(1)} ms\n`);
        } finally {
          a.child.kill('SIGKILL');
          b.child.kill('SIGTERM');
          await b.exited;
        }
      },
    );

    test(
      'black-holed store link: every child is stopped before the lease can expire',
      { timeout: 90_000 },
      async () => {
        const dir = tempDir();
        const proxy = await startFaultProxy({ target: serve.endpoint });
        const agent = spawnAgent(
          dir,
          `store: etcd://${proxy.endpoint}
service: bh
instance: { id: bh1 }
session: { ttl: 3s }
partitions: { count: 2 }
stateDir: ${dir}/state
relay: false
run:
  command: [node, ${DIST_FIXTURES}recording-child.js]
  env: { HISTORY: ${dir}/history, PIDS: ${dir}/pids, IGNORE_TERM: "1" }
  ready: { fd: 3 }
  stop: { grace: 10s }
`,
        );
        try {
          await waitFor(
            async () => (await agent.partitions()).filter((x) => x.state === 'ready').length === 2,
            {
              timeoutMs: 30_000,
              what: 'two ready children',
            },
          );
          const record = await store.get('/muster/services/bh/instances/bh1');
          assert.ok(record);
          const pids = (): number[] => lines(join(dir, 'pids')).flatMap((l) => l.split(' ').map(Number));
          // Watch the lease expire on the store itself (not through the proxy).
          let expiredAt = 0;
          const watch = store.watch({ key: '/muster/services/bh/instances/bh1' });
          const watching = (async () => {
            for await (const batch of watch) {
              if (batch.type === 'events' && batch.events.some((e) => e.type === 'delete')) {
                expiredAt = historyNow();
                return;
              }
            }
          })();
          proxy.blackhole();
          const cutAt = historyNow();
          let goneAt = 0;
          await waitFor(
            () => {
              if (pids().every((p) => !pidAlive(p))) {
                goneAt = historyNow();
                return true;
              }
              return false;
            },
            { timeoutMs: 10_000, intervalMs: 2, what: 'children stopped' },
          );
          await waitFor(() => expiredAt > 0, { timeoutMs: 10_000, what: 'lease expiry seen on the store' });
          watch.close();
          await watching;
          process.stdout.write(
            `# black-hole: children gone ${(goneAt - cutAt).toFixed(0)} ms after the cut, ${(expiredAt - goneAt).toFixed(0)} ms before the lease expired\n`,
          );
          assert.ok(goneAt < expiredAt, 'children gone before the lease expired');
          assert.ok(agent.log.some((l) => l.includes('stopping every child before the validity deadline')));
          // The link returns; the proxy itself resets the connections that lost bytes (as TCP does
          // once it gives up), the others carry on.
          proxy.pass();
          // After the link returns the agent rejoins and runs the partitions again.
          await waitFor(
            async () => (await agent.partitions()).filter((x) => x.state === 'ready').length === 2,
            {
              timeoutMs: 60_000,
              what: `children back after the link returned\n${agent.log
                .filter((l) => !l.includes('child output'))
                .slice(-15)
                .join('\n')}`,
            },
          );
        } finally {
          proxy.pass();
          agent.child.kill('SIGTERM');
          await agent.exited;
          await proxy.close();
        }
      },
    );

    test('SIGHUP restarts only the children whose settings changed', { timeout: 60_000 }, async () => {
      const dir = tempDir();
      const yaml = (mode: string): string => `store: ${serve.url}
service: hup
partitions: { count: 3 }
stateDir: ${dir}/state
relay: false
run:
  command: ["/bin/sh", "-c", "echo >&3; exec sleep 1000"]
  ready: { fd: 3 }
  stop: { grace: 1s }
overrides:
  "1": { env: { MODE: ${mode} } }
`;
      const agent = spawnAgent(dir, yaml('a'));
      try {
        const rows = (): Promise<PartitionRow[]> => agent.partitions();
        await waitFor(async () => (await rows()).filter((r) => r.state === 'ready').length === 3, {
          timeoutMs: 20_000,
          what: 'three ready',
        });
        const before = new Map((await rows()).map((r) => [r.partition, r.pid]));
        writeFileSync(join(dir, 'agent.yaml'), yaml('b'));
        agent.child.kill('SIGHUP');
        await waitFor(
          async () => {
            const r = (await rows()).find((x) => x.partition === '1');
            return r?.state === 'ready' && r.pid !== before.get('1');
          },
          { timeoutMs: 20_000, what: 'child 1 restarted' },
        );
        const afterRows = await rows();
        const row = (p: string): PartitionRow => afterRows.find((r) => r.partition === p)!;
        assert.equal(row('0').pid, before.get('0'));
        assert.equal(row('2').pid, before.get('2'));
        assert.equal(row('1').restarts, 1);
        assert.ok(readFileSync(`/proc/${row('1').pid}/environ`, 'utf8').includes('MODE=b'));
        // The same through `muster agent reload`: only partition 2's environment changes.
        writeFileSync(
          join(dir, 'agent.yaml'),
          yaml('b').replace('overrides:', 'overrides:\n  "2": { env: { X: "1" } }'),
        );
        // (CLI calls run asynchronously: the store is served from this process, which must keep answering.)
        const muster = async (...args: string[]): Promise<string> =>
          (await execFileAsync(process.execPath, [`${REPO}bin/muster.js`, ...args], { encoding: 'utf8' }))
            .stdout;
        const reload = { stdout: await muster('agent', 'reload', '--config', join(dir, 'agent.yaml')) };
        assert.match(reload.stdout, /restarted 2$/m);
        // `muster status` shows the instance, its children and their restarts (run asynchronously: the
        // store is served from this process).
        let last = '';
        await waitFor(
          async () => {
            const parsed = JSON.parse(
              await muster('status', '--service', 'hup', '--store', serve.url, '--json'),
            ) as {
              agents: { partitions: Record<string, { restarts: number; state: string }> }[];
            }[];
            const parts = parsed[0]?.agents[0]?.partitions ?? {};
            last = JSON.stringify(parts);
            return parts['1']?.restarts === 1 && parts['2']?.restarts === 1 && parts['0']?.state === 'ready';
          },
          { timeoutMs: 20_000, intervalMs: 200, what: 'muster status shows the restarts' },
        ).catch((err: unknown) =>
          assert.fail(
            `${String(err)}\n${last}\n${agent.log
              .filter((l) => !l.includes('child output'))
              .slice(-12)
              .join('\n')}`,
          ),
        );
        const text = await muster('status', '--store', serve.url);
        assert.match(text, /service hup: 1 instances/);
        assert.match(text, /INSTANCE\s+STATE\s+PARTITION\s+CHILD\s+PID/);
      } finally {
        agent.child.kill('SIGTERM');
        assert.equal(await agent.exited, 0);
      }
    });
  });
}
