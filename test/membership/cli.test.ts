import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ManualClock } from '../../src/clock.js';
import { listMembers, memberRows } from '../../src/cli/membership-commands.js';
import { join } from '../../src/membership/index.js';
import { MemoryStore } from '../../src/store/index.js';
import { buildProgram } from '../../src/cli/main.js';

test('muster members: lists one service or all, with id, address, state, health, weight and age', async () => {
  const clock = new ManualClock();
  const mem = new MemoryStore({ clock });
  const a = await join(mem, { service: 'api', id: 'a1', address: '10.0.0.1:80', weight: 2, clock });
  const b = await join(mem, { service: 'web', id: 'w1', clock });
  await mem.put('/muster/services/api/spec', '{}');
  await b.drain();
  const all = await listMembers(mem, undefined);
  assert.deepEqual(
    all.instances.map((i) => `${i.service}/${i.id}`),
    ['api/a1', 'web/w1'],
  );
  const api = await listMembers(mem, 'api');
  assert.deepEqual(
    api.instances.map((i) => i.id),
    ['a1'],
  );
  const rows = memberRows(all.instances, clock.now() + 90_000, true);
  assert.deepEqual(rows, [
    ['api', 'a1', '10.0.0.1:80', 'active', 'passing', '2', '1m30s'],
    ['web', 'w1', '-', 'draining', 'passing', '1', '1m30s'],
  ]);
  // An operator's drain key (`muster drain`) shows as draining, for one service and for all.
  await mem.put('/muster/services/api/drain/a1', '{"instance":"a1"}');
  assert.equal((await listMembers(mem, 'api')).instances[0]?.state, 'draining');
  assert.deepEqual(
    (await listMembers(mem, undefined)).instances.map((i) => i.state),
    ['draining', 'draining'],
  );
  await mem.delete('/muster/services/api/drain/a1');
  assert.equal((await listMembers(mem, 'api')).instances[0]?.state, 'active');
  await assert.rejects(listMembers(mem, 'bad/name'), /service name/);
  await a.leave();
  await b.leave();
  const help = buildProgram().commands.find((c) => c.name() === 'members');
  assert.ok(help, 'members is registered');
  assert.deepEqual(
    help.options.map((o) => o.long),
    ['--service', '--root', '--store', '--json'],
  );
});
