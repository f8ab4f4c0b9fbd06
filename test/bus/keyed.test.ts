/**
 * Keyed, fenced calls in one process over a memory store: routing to the owner, the receiver's
 * token check, holding calls while the owner is moving.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { isMusterError } from '../../src/errors.js';
import type { AcquireContext } from '../../src/partitions/index.js';
import { MemoryStore } from '../../src/store/index.js';
import { waitFor } from '../../src/testing/index.js';
import { busNodes } from './fixtures/nodes.js';

const { node } = busNodes();

describe('bus keyed calls', () => {
  test(
    'a keyed call reaches the owner with its token; a wrong token is refused with MUSTER_NOT_OWNER',
    { timeout: 20_000 },
    async () => {
      const store = new MemoryStore();
      const server = await node(store, { id: 'owner' });
      const client = await node(store);
      const contexts = new Map<string, AcquireContext>();
      const serving = await server.serve(
        'kv',
        { get: (m, ctx) => ({ m, partition: ctx.partition, token: ctx.token, by: 'owner' }) },
        { partitions: { partitions: 4, onAcquire: (p, ctx) => void contexts.set(p, ctx) } },
      );
      await waitFor(() => serving.partitions?.assumed.size === 4, { what: 'all 4 partitions owned' });
      const r = (await client.call('kv', 'get', 'x', { key: 'user-1' })) as {
        partition: string;
        token: number;
      };
      assert.equal(r.token, contexts.get(r.partition)?.token);
      // A stale token (what a caller with an old view carries) is refused; nothing runs.
      const err = await client
        .request(server.address, { s: 'kv', m: 'get', a: 'x', p: r.partition, t: r.token - 1 }, 2000)
        .then(
          () => assert.fail('expected MUSTER_NOT_OWNER'),
          (e: unknown) => e,
        );
      assert.ok(isMusterError(err, 'MUSTER_NOT_OWNER'), String(err));
      assert.equal(err.details.token, r.token);
      assert.equal(err.details.ran, false);
    },
  );

  test(
    'calls for a partition whose owner is moving are held, then delivered; bounded by their timeout',
    { timeout: 20_000 },
    async () => {
      const store = new MemoryStore();
      const server = await node(store);
      const client = await node(store);
      let ctx: AcquireContext | undefined;
      const serving = await server.serve(
        'mv',
        { get: () => 'done' },
        {
          partitions: {
            partitions: 1,
            onAcquire: (_p, c) => {
              ctx = c;
            },
          },
        },
      );
      await waitFor(() => serving.partitions?.assumed.size === 1 && ctx !== undefined, { what: 'owned' });
      assert.equal(await client.call('mv', 'get', null, { key: 'k' }), 'done');
      await ctx?.publish({ moving: true });
      await new Promise((r) => setTimeout(r, 50));
      let settled = false;
      const held = client.call('mv', 'get', null, { key: 'k', timeout: 10_000 }).finally(() => {
        settled = true;
      });
      const timedOut = client.call('mv', 'get', null, { key: 'k', timeout: 200 }).catch((e: unknown) => e);
      const e = await timedOut;
      assert.ok(isMusterError(e, 'MUSTER_TIMEOUT'), String(e));
      assert.equal(settled, false, 'the held call is still waiting');
      await ctx?.publish({ moving: false });
      assert.equal(await held, 'done');
    },
  );

  test(
    'a keyed call to a service nobody serves fails at once with MUSTER_NO_INSTANCE',
    { timeout: 10_000 },
    async () => {
      const store = new MemoryStore();
      const client = await node(store);
      const started = performance.now();
      const e = await client.call('ghost', 'get', null, { key: 'k', timeout: 5000 }).catch((x: unknown) => x);
      assert.ok(isMusterError(e, 'MUSTER_NO_INSTANCE'), String(e));
      assert.ok(performance.now() - started < 1000);
    },
  );
});
