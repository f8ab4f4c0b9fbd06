/**
 * Two agents in one process on a memory store: a crash-looping child spends its budget and its
 * partition moves to the other agent; a TTL check the child stops reporting triggers its action.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import type { AgentPin } from '../../src/agent/index.js';
import { jsonBytes, jsonOf } from '../../src/store/index.js';
import { waitFor } from '../../src/testing/index.js';
import { api, lines, withAgents } from './helpers.js';

describe('agent: failures that move or restart', () => {
  test(
    'a crash-looping child exhausts its budget and its partition moves to another agent',
    { timeout: 60_000 },
    async () => {
      await withAgents(async ({ dir, store, start }) => {
        const yaml = (id: string): string => `service: loop
instance: { id: ${id}, tags: [consumer] }
partitions: { count: 1 }
stateDir: ${dir}/state-${id}
relay: false
run:
  command: ["/bin/sh", "-c", "if [ \\"$MUSTER_INSTANCE\\" = a ]; then exit 5; fi; echo >&3; exec sleep 1000"]
  ready: { fd: 3 }
  restart: { backoff: { initial: 20ms, max: 100ms }, budget: 2 in 60s }
`;
        // Partition 0 starts on a (where it crashes).
        await store.put('/muster/services/loop/pins/0', jsonBytes({ instance: 'a' }));
        const a = await start(yaml('a'), 'a.yaml');
        const b = await start(yaml('b'), 'b.yaml');
        await waitFor(() => b.agent.rows().some((r) => r.partition === '0' && r.state === 'ready'), {
          timeoutMs: 20_000,
          what: 'partition 0 ready on b',
        });
        const pinKv = await store.get('/muster/services/loop/pins/0');
        const pin = jsonOf<AgentPin>(pinKv!.value, pinKv!.key);
        assert.equal(pin.instance, 'b');
        assert.equal(pin.by, 'a');
        assert.deepEqual(pin.tried, ['a']);
        assert.match(pin.reason, /exited with code 5/);
        const status = (await api(a, 'GET', '/v1/status')).json.status as {
          handedOff: Record<string, { to: string }>;
        };
        assert.equal(status.handedOff['0']?.to, 'b');
        assert.equal(a.agent.rows().length, 0, 'a no longer runs partition 0');
        assert.equal(pinKv!.lease, a.agent.handle.leaseId, "the pin lives under a's session lease");
        // The status record in the store says why.
        await waitFor(
          async () => {
            const kv = await store.get('/muster/status/loop/agents/a');
            return (
              kv !== undefined &&
              jsonOf<{ handedOff: Record<string, unknown> }>(kv.value, kv.key).handedOff['0'] !== undefined
            );
          },
          { timeoutMs: 5000, what: "a's status record names the hand-off" },
        );
        // ...and so does a's instance record, where operators look; with its tags.
        await waitFor(
          async () => {
            const kv = await store.get('/muster/services/loop/instances/a');
            const rec = kv && jsonOf<{ notes?: Record<string, string>; tags: string[] }>(kv.value, kv.key);
            return rec?.notes?.['handoff/0']?.startsWith('to b at ') === true;
          },
          { timeoutMs: 5000, what: "a's instance record notes the hand-off" },
        );
        const recA = await store.get('/muster/services/loop/instances/a');
        const noteA = jsonOf<{ notes: Record<string, string>; tags: string[] }>(recA!.value, recA!.key);
        assert.match(noteA.notes['handoff/0']!, /exited with code 5/);
        assert.deepEqual(noteA.tags, ['consumer']);
        await assert.rejects(a.agent.handle.setNotes({ '': 'x' }), { code: 'MUSTER_INVALID_ARGUMENT' });
        await assert.rejects(a.agent.handle.setNotes({ n: 'x'.repeat(5000) }), {
          code: 'MUSTER_INVALID_ARGUMENT',
        });
        // a leaves: its session ends, and the pin it wrote goes with it; b keeps the partition.
        await a.daemon.stop();
        assert.equal(
          await store.get('/muster/services/loop/pins/0'),
          undefined,
          'no pin outlives its writer',
        );
        assert.ok(b.agent.rows().some((r) => r.partition === '0' && r.state === 'ready'));
      });
    },
  );

  test(
    'a TTL check the child stops reporting fails and restarts it; one that keeps reporting does not',
    { timeout: 60_000 },
    async () => {
      await withAgents(async ({ dir, start }) => {
        const running = await start(`service: ttl
partitions: { count: 2 }
stateDir: ${dir}/state
relay: false
run:
  command:
    - /bin/sh
    - -c
    - |
      echo >&3
      report() { curl -sf -X PUT -H "Authorization: Bearer $MUSTER_API_TOKEN" "$MUSTER_API/v1/checks/progress/pass?partition=$MUSTER_PARTITION" >/dev/null; }
      sleep 0.05; report
      while [ "$KEEP" = 1 ]; do sleep 0.1; report; done
      exec sleep 1000
  ready: { fd: 3 }
  restart: { backoff: { initial: 10ms, max: 50ms } }
checks:
  - { name: progress, ttl: 500ms, onFailing: restart }
overrides:
  "1": { env: { KEEP: "1" } }
`);
        await waitFor(() => (running.agent.rows().find((r) => r.partition === '0')?.restarts ?? 0) >= 2, {
          timeoutMs: 20_000,
          what: 'partition 0 restarted twice by its TTL check',
        });
        const one = running.agent.rows().find((r) => r.partition === '1')!;
        assert.equal(one.restarts, 0, 'the child that reports is left alone');
        assert.equal(one.checks.progress, 'passing');
        const bad = await api(running, 'PUT', '/v1/checks/progress/maybe?partition=1');
        assert.equal(bad.status, 400);
        const unknown = await api(running, 'PUT', '/v1/checks/nope/pass?partition=1');
        assert.equal(unknown.status, 404);
      });
    },
  );

  test(
    'a script check runs with {pid}; its exec handlers get {check} and {partition}',
    { timeout: 30_000 },
    async () => {
      await withAgents(async ({ dir, start }) => {
        const running = await start(`service: sc
partitions: { count: 1 }
stateDir: ${dir}/state
relay: false
run: { command: [sleep, "1000"] }
checks:
  - name: marker
    script: "kill -0 {pid} && test -e ${dir}/healthy || exit 2"
    interval: 50ms
    timeout: 2s
    onFailing: { exec: "echo failing {check} {partition} >> ${dir}/paged" }
    onPassing: { exec: "echo passing {check} {partition} >> ${dir}/paged" }
`);
        await waitFor(() => lines(join(dir, 'paged')).includes('failing marker 0'), {
          timeoutMs: 10_000,
          what: 'the failing handler ran',
        });
        assert.equal(running.agent.rows()[0]?.checks.marker, 'failing');
        writeFileSync(join(dir, 'healthy'), '');
        await waitFor(() => lines(join(dir, 'paged')).includes('passing marker 0'), {
          timeoutMs: 10_000,
          what: 'the passing handler ran',
        });
        assert.equal(running.agent.rows()[0]?.restarts, 0, 'exec handlers do not restart the child');
      });
    },
  );
});
