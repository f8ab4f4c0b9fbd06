import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { RotatingLog } from '../../src/agent/index.js';
import { waitFor } from '../../src/testing/index.js';
import { api, tempDir, withAgents } from './helpers.js';

describe('agent: child logs and metrics', () => {
  test('a rotating log keeps at most keep files of about maxSize', { timeout: 10_000 }, async () => {
    const dir = tempDir();
    const log = new RotatingLog(dir, 'svc-0', 1000, 2);
    for (let i = 0; i < 200; i++) log.write(i % 2 ? 'stderr' : 'stdout', `line ${i} ${'x'.repeat(40)}`);
    await log.close();
    const files = readdirSync(dir).sort();
    assert.deepEqual(files, ['svc-0.log', 'svc-0.log.1', 'svc-0.log.2']);
    for (const f of files) assert.ok(readFileSync(join(dir, f)).length <= 1000, `${f} within maxSize`);
    assert.match(readFileSync(join(dir, 'svc-0.log'), 'utf8'), /line 199/);
  });

  test(
    "each child's output goes to its own file; /metrics shows the agent's state",
    { timeout: 30_000 },
    async () => {
      await withAgents(async ({ dir, start }) => {
        const running = await start(`service: lm
partitions: { count: 2 }
stateDir: ${dir}/state
relay: false
run:
  command: ["/bin/sh", "-c", "echo out-$MUSTER_PARTITION; echo err-$MUSTER_PARTITION >&2; echo >&3; exec sleep 1000"]
  ready: { fd: 3 }
  logs: { dir: ${dir}/logs, maxSize: 1MiB, keep: 1 }
`);
        await waitFor(() => running.agent.rows().filter((r) => r.state === 'ready').length === 2, {
          timeoutMs: 10_000,
          what: 'two ready',
        });
        for (const p of ['0', '1']) {
          const file = join(dir, 'logs', `lm-${p}.log`);
          await waitFor(
            () => {
              try {
                const text = readFileSync(file, 'utf8');
                return text.includes(`O out-${p}`) && text.includes(`E err-${p}`);
              } catch {
                return false;
              }
            },
            { timeoutMs: 5000, what: `log of partition ${p}` },
          );
        }
        const metrics = (await api(running, 'GET', '/metrics')).json as unknown as string;
        assert.match(metrics, /^muster_agent_owned_partitions 2$/m);
        assert.match(metrics, /muster_agent_child_state\{partition="0",state="ready"\} 1/);
        assert.match(metrics, /muster_agent_child_rss_bytes\{partition="1"\} [1-9]/);
        assert.match(metrics, /muster_agent_session_deadline_margin_seconds [0-9.]+/);
        assert.match(metrics, /muster_agent_handoffs_total\{kind="acquired"\} 2/);
      });
    },
  );
});
