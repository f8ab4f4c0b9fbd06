import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  ConfigRelay,
  type ConfigHandle,
  RelayClient,
  relayHolding,
  holdingOf,
  initConfig,
  openConfig,
  publishConfig,
  readHolders,
  recordHolding,
  type HolderRecorder,
  waitForHolders,
} from '../../src/config/index.js';
import { isMusterError } from '../../src/errors.js';
import { MemoryStore } from '../../src/store/index.js';

interface Instance {
  handle: ConfigHandle;
  recorder: HolderRecorder;
  lease: string;
}

async function start(store: MemoryStore, n: number, prefix = 'i'): Promise<Instance[]> {
  const out: Instance[] = [];
  for (let i = 0; i < n; i++) {
    const { id } = await store.grantLease(60);
    const handle = openConfig(store, 'demo');
    const recorder = recordHolding(handle, { store, instance: `${prefix}${i}`, lease: id });
    out.push({ handle, recorder, lease: id });
  }
  await Promise.all(out.map((x) => x.handle.ready()));
  return out;
}

async function stop(all: Instance[]): Promise<void> {
  for (const x of all) {
    await x.recorder.close();
    await x.handle.close();
  }
}

describe('config holders', () => {
  // The system clock's timers are unref'd: keep the test's event loop alive while it waits on them.
  let keepAlive: NodeJS.Timeout | undefined;
  before(() => {
    keepAlive = setInterval(() => undefined, 1000);
  });
  after(() => clearInterval(keepAlive));
  test(
    'records the newest version per instance; --wait resolves when all hold it, names stragglers, ignores the dead',
    { timeout: 60_000 },
    async () => {
      const store = new MemoryStore();
      await initConfig(store, 'demo', { maxStaleness: '1s', maxClockSkew: '50ms', minLeadTime: '1200ms' });
      const fleet = await start(store, 3);
      const v1 = await publishConfig(store, 'demo', { n: 1 }, { in: '2s' });
      const r1 = await waitForHolders(store, 'demo', v1.version, { timeout: '10s' });
      assert.deepEqual(r1.holders, ['i0', 'i1', 'i2']);
      const holders = await readHolders(store, 'demo');
      assert.deepEqual(holders.map((h) => [h.instance, h.version, h.state]).sort(), [
        ['i0', 1, 'fresh'],
        ['i1', 1, 'fresh'],
        ['i2', 1, 'fresh'],
      ]);
      assert.ok(holders.every((h) => typeof h.verifiedAt === 'number'));

      // i2 stops receiving (its handle closes) but its lease lives on: a straggler.
      const [, , straggler] = fleet;
      await straggler!.recorder.close();
      await straggler!.handle.close();
      const v2 = await publishConfig(store, 'demo', { n: 2 }, { in: '2s' });
      await assert.rejects(waitForHolders(store, 'demo', v2.version, { timeout: '700ms' }), (err) => {
        assert.ok(isMusterError(err) && err.code === 'MUSTER_NOT_PROPAGATED', String(err));
        assert.deepEqual(err.details?.['stragglers'], [{ instance: 'i2', version: 1 }]);
        return true;
      });
      const timeline = holdingOf([1, 2], await readHolders(store, 'demo'));
      assert.deepEqual(timeline[1]?.missing, ['i2']);
      assert.deepEqual([...(timeline[1]?.holders ?? [])].sort(), ['i0', 'i1']);

      // Its lease ends: it is no longer a live holder, and the wait completes without it.
      const waiting = waitForHolders(store, 'demo', v2.version, { timeout: '10s' });
      await store.revokeLease(straggler!.lease);
      assert.deepEqual((await waiting).holders, ['i0', 'i1']);
      await stop(fleet.slice(0, 2));
      await store.close();
    },
  );

  test(
    '1,000 instances cost about one store write per instance per version',
    { timeout: 120_000 },
    async () => {
      const store = new MemoryStore();
      await initConfig(store, 'demo', { maxStaleness: '5s', maxClockSkew: '50ms', minLeadTime: '5200ms' });
      const n = 1000;
      const fleet = await start(store, n);
      await Promise.all(fleet.map((x) => x.recorder.flush()));
      const before = fleet.reduce((s, x) => s + x.recorder.writes, 0);
      const versions = 3;
      for (let i = 1; i <= versions; i++) {
        const v = await publishConfig(store, 'demo', { n: i }, { in: '6s' });
        await waitForHolders(store, 'demo', v.version, { timeout: '60s' });
      }
      const after = fleet.reduce((s, x) => s + x.recorder.writes, 0);
      const perVersion = (after - before) / versions;
      process.stdout.write(
        `# holders: ${n} instances, ${versions} versions: ${after - before} store writes (${perVersion} per version, ${before} at start)\n`,
      );
      assert.ok(perVersion <= 3 * n, `${perVersion} writes per version for ${n} instances`);
      assert.ok(perVersion >= n, 'every instance wrote its new version');
      await stop(fleet);
      await store.close();
    },
  );

  test(
    'behind a relay: the relay records one key for its host, fresh, with the newest version',
    { timeout: 60_000 },
    async () => {
      const store = new MemoryStore();
      await initConfig(store, 'demo', { maxStaleness: '1s', maxClockSkew: '50ms', minLeadTime: '1200ms' });
      const dir = mkdtempSync(join(tmpdir(), 'muster-relay-holders-'));
      const path = join(dir, 'relay.sock');
      const { id: lease } = await store.grantLease(60);
      const rec = relayHolding({ store, lease, instance: 'host-a/relay', maxStaleness: '1s' });
      const relay = await ConfigRelay.start({
        store,
        listen: path,
        maxStaleness: '1s',
        onPrefixUpdate: rec.onPrefixUpdate,
      });
      const clients = await Promise.all([1, 2, 3].map(() => RelayClient.connect(path)));
      const handles = clients.map((c) => openConfig(c, 'demo'));
      try {
        await Promise.all(handles.map((h) => h.ready()));
        const writesBefore = rec.writes;
        const v1 = await publishConfig(store, 'demo', { n: 1 }, { in: '2s' });
        assert.deepEqual((await waitForHolders(store, 'demo', v1.version, { timeout: '10s' })).holders, [
          'host-a/relay',
        ]);
        const v2 = await publishConfig(store, 'demo', { n: 2 }, { in: '2s' });
        await waitForHolders(store, 'demo', v2.version, { timeout: '10s' });
        await rec.flush();
        const [r] = await readHolders(store, 'demo');
        assert.equal(r?.state, 'fresh');
        assert.equal(r?.version, 2);
        // The processes behind it hold what the relay holds.
        for (const h of handles) assert.equal(Math.max(...h.timeline().versions.map((v) => v.version)), 2);
        assert.ok(rec.writes - writesBefore <= 4, `${rec.writes - writesBefore} writes for 2 versions`);
      } finally {
        for (const h of handles) await h.close();
        for (const c of clients) await c.close();
        await relay.close();
        await rec.close();
        await store.close();
        rmSync(dir, { recursive: true, force: true });
      }
    },
  );
});
