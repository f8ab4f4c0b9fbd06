import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { readStartTime } from '../../src/process/index.js';
import { waitingSpares } from '../../src/process/spare.js';
import { jsonOf } from '../../src/store/index.js';
import { backoffDelay } from '../../src/agent/index.js';
import { initConfig, publishConfig } from '../../src/config/index.js';
import { waitFor } from '../../src/testing/index.js';
import { api, groupAlive, lines, pidAlive, withAgents } from './helpers.js';

function yaml(dir: string, extra = ''): string {
  return `service: sv
session: { ttl: 3s }
partitions: { count: 2 }
stateDir: ${dir}/state
relay: false
run:
  command: ["/bin/sh", "-c", "echo \\"$MUSTER_PARTITION $MUSTER_FENCING_TOKEN $MUSTER_SERVICE $$\\" >> ${dir}/starts; echo ready >&3; exec sleep 1000"]
  ready: { fd: 3 }
  stop: { grace: 2s }
  restart: { backoff: { initial: 50ms, max: 200ms } }
  logs: { dir: ${dir}/logs, maxSize: 1KiB, keep: 2 }
${extra}`;
}

describe('restart back-off', () => {
  test('the first restart after a stable run is immediate; crash loops back off from the second', () => {
    assert.equal(
      backoffDelay(0, 100, 30_000, () => 1),
      0,
    );
    assert.equal(
      backoffDelay(1, 100, 30_000, () => 1),
      100,
    );
    assert.equal(
      backoffDelay(1, 100, 30_000, () => 0),
      50,
      'jitter in [½, 1]',
    );
    assert.equal(
      backoffDelay(3, 100, 30_000, () => 1),
      400,
    );
    assert.equal(
      backoffDelay(40, 100, 30_000, () => 1),
      30_000,
      'capped',
    );
  });
});

describe('agent supervising children (memory store)', () => {
  test(
    'a child per partition, with its identity in the environment; restart and leave',
    { timeout: 60_000 },
    async () => {
      await withAgents(async ({ dir, store, start }) => {
        const running = await start(yaml(dir));
        await waitFor(() => running.agent.rows().filter((r) => r.state === 'ready').length === 2, {
          timeoutMs: 10_000,
          what: 'two ready children',
        });
        const starts = lines(join(dir, 'starts')).map((l) => l.split(' '));
        assert.deepEqual(starts.map((s) => s[0]).sort(), ['0', '1']);
        const rows = (await api(running, 'GET', '/v1/partitions')).json.partitions;
        for (const s of starts) {
          const row = rows.find((r) => r.partition === s[0])!;
          assert.equal(String(row.token), s[1], 'MUSTER_FENCING_TOKEN is the token');
          assert.equal(s[2], 'sv');
          assert.equal(String(row.pid), s[3]);
        }
        const old = rows.find((r) => r.partition === '0')!;
        const r = await api(running, 'POST', '/v1/partitions/0/restart');
        assert.equal(r.status, 200);
        await waitFor(
          () => {
            const row = running.agent.rows().find((x) => x.partition === '0');
            return row !== undefined && row.state === 'ready' && row.pid !== old.pid;
          },
          { timeoutMs: 10_000, what: 'restarted child' },
        );
        assert.equal(groupAlive(old.pid!), false, 'the old group is gone');
        assert.equal((await api(running, 'POST', '/v1/partitions/9/restart')).status, 404);
        const unauth = await fetch(`${running.daemon.ctx.admin.url}/v1/partitions`);
        assert.equal(unauth.status, 401);
        const pids = running.agent.rows().map((x) => x.pid as number);
        await running.daemon.stop();
        for (const pid of pids) assert.equal(groupAlive(pid), false, `group ${pid} gone after leave`);
        const owners = await store.range({ prefix: '/muster/services/sv/owners/' });
        assert.equal(owners.kvs.length, 0, 'owner keys deleted after the children stopped');
      });
    },
  );

  test(
    'issue-15: a restart runs in the child forked ahead (prewarm), with its identity; the leave ends the spare',
    { timeout: 60_000 },
    async () => {
      await withAgents(async ({ dir, start }) => {
        const running = await start(yaml(dir));
        await waitFor(() => running.agent.rows().filter((r) => r.state === 'ready').length === 2, {
          timeoutMs: 10_000,
          what: 'two ready children',
        });
        await waitFor(() => waitingSpares()[0]?.readyFd === true, { timeoutMs: 10_000, what: 'a spare' });
        const spare = waitingSpares()[0]!;
        const old = running.agent.rows().find((r) => r.partition === '0')!;
        process.kill(old.pid!, 'SIGKILL');
        await waitFor(
          () =>
            running.agent.rows().find((r) => r.partition === '0' && r.state === 'ready')?.pid === spare.pid,
          { timeoutMs: 10_000, what: 'the restart in the spare' },
        );
        const row = running.agent.rows().find((r) => r.partition === '0')!;
        const last = lines(join(dir, 'starts')).at(-1)!.split(' ');
        assert.deepEqual(last, ['0', String(row.token), 'sv', String(spare.pid)], 'its identity and its pid');
        await waitFor(() => waitingSpares()[0] !== undefined, { timeoutMs: 10_000, what: 'the next spare' });
        const next = waitingSpares()[0]!;
        await running.daemon.stop();
        assert.equal(waitingSpares()[0], undefined);
        assert.equal(pidAlive(next.pid), false, 'the spare is gone with the agent');
      });
    },
  );

  test(
    '{port}: a free port per child, HTTP readiness, and the address published in the owner record',
    { timeout: 60_000 },
    async () => {
      await withAgents(async ({ dir, store, start }) => {
        const running = await start(`service: web
partitions: { count: 1 }
stateDir: ${dir}/state
relay: false
run:
  command: [python3, -m, http.server, --bind, 127.0.0.1, "{port}"]
  ready: { http: "http://127.0.0.1:{port}/", interval: 50ms, timeout: 20s }
  stop: { grace: 2s }
`);
        await waitFor(() => running.agent.rows()[0]?.state === 'ready', {
          timeoutMs: 20_000,
          what: 'ready over HTTP',
        });
        const row = running.agent.rows()[0]!;
        assert.ok(row.port !== null && row.port > 0);
        await waitFor(
          async () => {
            const kv = await store.get('/muster/services/web/owners/0');
            return (
              kv !== undefined &&
              jsonOf<{ address?: string }>(kv.value, kv.key).address === `127.0.0.1:${row.port}`
            );
          },
          { timeoutMs: 5000, what: 'address in the owner record' },
        );
        const env = readFileSync(`/proc/${row.pid}/environ`, 'utf8').split('\0');
        assert.ok(env.includes(`MUSTER_PORT=${row.port}`));
        assert.equal((await fetch(`http://127.0.0.1:${row.port}/`)).status, 200);
      });
    },
  );

  test(
    'a starting agent kills the child groups a dead predecessor left in its registry before it acquires',
    { timeout: 30_000 },
    async () => {
      await withAgents(async ({ dir, start }) => {
        // A group left behind by an agent whose guard did not clean up (simulated: started outside the kernel).
        const orphan = spawn('sleep', ['1000'], { detached: true, stdio: 'ignore' });
        orphan.unref();
        const registry = join(dir, 'state', 'children', 'sweep');
        mkdirSync(registry, { recursive: true });
        writeFileSync(
          join(registry, `${orphan.pid}.json`),
          JSON.stringify({
            pid: orphan.pid,
            pgid: orphan.pid,
            startTime: readStartTime(orphan.pid!),
            label: 'sweep/0',
            command: ['sleep', '1000'],
            startedAt: Date.now(),
            owner: { pid: 999_999, startTime: '1' },
          }),
        );
        assert.equal(groupAlive(orphan.pid!), true);
        const running = await start(`service: sweep
partitions: { count: 1 }
stateDir: ${dir}/state
relay: false
run: { command: [sleep, "1000"] }
`);
        // Dead, if not yet reaped by this test process (a zombie still answers kill(-pgid, 0)).
        assert.equal(pidAlive(orphan.pid!), false, 'the orphan is dead once the agent has started');
        await waitFor(() => running.agent.rows()[0]?.state === 'ready', {
          timeoutMs: 10_000,
          what: 'new child',
        });
      });
    },
  );

  test(
    'a crash-looping child backs off and spends its budget; alone, it stays failed, loudly',
    { timeout: 60_000 },
    async () => {
      await withAgents(async ({ dir, start }) => {
        const running = await start(`service: crash
partitions: { count: 1 }
stateDir: ${dir}/state
relay: false
run:
  command: "echo start >> ${dir}/starts; exit 3"
  restart: { backoff: { initial: 20ms, max: 100ms }, budget: 3 in 60s }
`);
        await waitFor(() => running.agent.rows()[0]?.state === 'failed', {
          timeoutMs: 10_000,
          what: 'failed',
        });
        const row = running.agent.rows()[0]!;
        assert.equal(row.lastExit?.code, 3);
        assert.equal(row.error?.code, 'MUSTER_RESTART_BUDGET');
        assert.equal(lines(join(dir, 'starts')).length, 4, 'first start + 3 restarts');
      });
    },
  );

  test(
    'many restarts in one ownership leave no abort listener behind (no MaxListenersExceededWarning)',
    { timeout: 60_000 },
    async () => {
      const warnings: string[] = [];
      const onWarning = (w: Error): void => void warnings.push(`${w.name}: ${w.message}`);
      process.on('warning', onWarning);
      try {
        await withAgents(async ({ dir, start }) => {
          const running = await start(
            `service: churn
partitions: { count: 1 }
stateDir: ${dir}/state
relay: false
run:
  command: "echo start >> ${dir}/starts; exit 1"
  restart: { backoff: { initial: 1ms, max: 2ms }, budget: 40 in 60s }
`,
          );
          await waitFor(() => lines(join(dir, 'starts')).length >= 25, {
            timeoutMs: 30_000,
            what: '25 starts of one partition',
          });
          assert.equal(running.agent.rows()[0]?.token !== undefined, true);
          // Warnings are emitted on a later tick.
          await new Promise((resolve) => setImmediate(resolve));
        });
      } finally {
        process.off('warning', onWarning);
      }
      assert.deepEqual(
        warnings.filter((w) => w.includes('MaxListenersExceeded')),
        [],
        'one ownership, many children: listeners are removed when each wait ends',
      );
    },
  );

  test(
    'more than ten event streams: one stopping listener for all, every stream ended when the agent stops',
    { timeout: 60_000 },
    async () => {
      const warnings: string[] = [];
      const onWarning = (w: Error): void => void warnings.push(`${w.name}: ${w.message}`);
      process.on('warning', onWarning);
      try {
        await withAgents(async ({ dir, store, start }) => {
          await initConfig(store, 'pong');
          await publishConfig(store, 'pong', { n: 1 }, { in: '3.1s' });
          const running = await start(`service: sse
partitions: { count: 1 }
stateDir: ${dir}/state
relay: false
config: [pong]
run: { command: [sleep, "1000"] }
`);
          const token = readFileSync(running.agent.config.api.tokenFile, 'utf8').trim();
          const streams = await Promise.all(
            Array.from({ length: 12 }, async () => {
              const res = await fetch(`${running.daemon.ctx.admin.url}/v1/config/pong/events`, {
                headers: { authorization: `Bearer ${token}` },
              });
              assert.equal(res.status, 200);
              return { body: res.text() }; // settles when the agent ends the stream
            }),
          );
          const ended = Promise.all(streams.map((s) => s.body));
          await running.daemon.stop();
          const bodies = await ended;
          assert.equal(bodies.length, 12, 'every stream ended when the agent stopped');
        });
      } finally {
        process.off('warning', onWarning);
      }
      assert.deepEqual(
        warnings.filter((w) => w.includes('MaxListenersExceeded')),
        [],
      );
    },
  );

  test(
    'a command that does not exist is reported per partition, not an agent crash',
    { timeout: 60_000 },
    async () => {
      await withAgents(async ({ dir, start }) => {
        const running = await start(`service: missing
partitions: { count: 2 }
stateDir: ${dir}/state
relay: false
run:
  command: ["/nonexistent/muster-no-such-command", "{partition}"]
  restart: { backoff: { initial: 20ms, max: 50ms }, budget: 2 in 60s }
`);
        await waitFor(
          () => running.agent.rows().length === 2 && running.agent.rows().every((r) => r.error !== null),
          {
            timeoutMs: 10_000,
            what: 'errors on both partitions',
          },
        );
        const status = await api(running, 'GET', '/v1/partitions');
        for (const r of status.json.partitions) {
          assert.match(r.error!.code, /MUSTER_SPAWN_FAILED|MUSTER_RESTART_BUDGET/);
          assert.match(r.error!.message, /muster-no-such-command/);
        }
        assert.equal((await api(running, 'GET', '/v1/status')).status, 200, 'the agent still answers');
      });
    },
  );
});
