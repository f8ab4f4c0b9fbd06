/**
 * Agent children hand their state over: the old child writes it to `MUSTER_HANDOFF_OUT` when it
 * exits on the stop signal; the next owner's child reads it from `MUSTER_HANDOFF_IN`.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { jsonBytes } from '../../src/store/index.js';
import { waitFor } from '../../src/testing/index.js';
import { lines, withAgents } from './helpers.js';

describe('agent: state hand-off files', () => {
  test('a moved partition starts its new child with the old child’s state', { timeout: 60_000 }, async () => {
    await withAgents(async ({ dir, store, start }) => {
      const log = `${dir}/starts.log`;
      // Each child counts the starts of its partition across owners: it loads the count handed over,
      // adds one, and writes it back on SIGTERM.
      const script = [
        'n=0',
        '[ -n "$MUSTER_HANDOFF_IN" ] && n=$(cat "$MUSTER_HANDOFF_IN")',
        'n=$((n+1))',
        `echo "$MUSTER_INSTANCE $n" >> ${log}`,
        'trap \'echo $n > "$MUSTER_HANDOFF_OUT"; exit 0\' TERM',
        'echo >&3',
        'while :; do sleep 0.05; done',
      ].join('\n');
      const yaml = (id: string): string => `service: moves
instance: { id: ${id} }
partitions: { count: 1 }
stateDir: ${dir}/state-${id}
relay: false
run:
  command: ["/bin/sh", "-c", ${JSON.stringify(script)}]
  ready: { fd: 3 }
`;
      await store.put('/muster/services/moves/pins/0', jsonBytes({ instance: 'a' }));
      await start(yaml('a'), 'a.yaml');
      await start(yaml('b'), 'b.yaml');
      const started = (n: number): Promise<void> =>
        waitFor(() => lines(log).length >= n, { timeoutMs: 20_000, what: `${n} child starts` });
      await started(1);
      for (const [i, to] of (['b', 'a', 'b'] as const).entries()) {
        await store.put('/muster/services/moves/pins/0', jsonBytes({ instance: to }));
        await started(i + 2);
      }
      assert.deepEqual(lines(log), ['a 1', 'b 2', 'a 3', 'b 4']);
    });
  });
});
