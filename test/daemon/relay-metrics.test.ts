import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { request } from 'undici';
import { initConfig, openConfig, publishConfig, RelayClient } from '../../src/config/index.js';
import { openStore } from '../../src/store/index.js';
import { startTempServe } from '../../src/testing/index.js';
import { startChild, within } from './child.js';
import { parsePrometheusText, sampleValue } from './prom-text.js';

const bin = new URL('../../../bin/muster.js', import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), 'muster-relay-metrics-'));
after(() => rmSync(dir, { recursive: true, force: true }));

describe('muster config relay on the daemon runtime', () => {
  test(
    'serves /metrics (clients, versions held, proof age) on its admin address; SIGTERM closes it',
    { timeout: 60_000 },
    async () => {
      const serve = await startTempServe();
      const store = await openStore(serve.url);
      const socket = join(dir, 'relay.sock');
      const run = startChild(process.execPath, [
        bin,
        'config',
        'relay',
        '--listen',
        socket,
        '--json',
        '--store',
        serve.url,
        '--log-level',
        'warn',
      ]);
      try {
        await initConfig(store, 'metered');
        await publishConfig(store, 'metered', { a: 1 }, { in: '5s' });
        await publishConfig(store, 'metered', { a: 2 }, { in: '1h' });
        const listening = (await run.waitFor(
          (_l, j: { event?: string } | undefined) => j?.event === 'listening',
        )) as {
          admin: string;
          socket: string;
        };
        assert.match(listening.admin, /^http:\/\/127\.0\.0\.1:\d+$/);
        const client = await RelayClient.connect(socket);
        const h = openConfig(client, 'metered');
        try {
          await h.ready();
          const res = await request(`${listening.admin}/metrics`);
          assert.equal(res.statusCode, 200);
          const samples = parsePrometheusText(await res.body.text());
          const prefix = '/muster/config/metered/';
          assert.equal(sampleValue(samples, 'muster_relay_clients'), 1);
          assert.equal(sampleValue(samples, 'muster_relay_configs'), 1);
          assert.equal(sampleValue(samples, 'muster_relay_versions', { prefix }), 2);
          assert.ok((sampleValue(samples, 'muster_relay_watchers', { prefix }) ?? 0) >= 1);
          assert.ok((sampleValue(samples, 'muster_relay_revision', { prefix }) ?? 0) > 0);
          const age = sampleValue(samples, 'muster_relay_proof_age_seconds', { prefix });
          assert.ok(age !== undefined && age >= 0 && age < 2, `proof age ${age}`);
          assert.equal(sampleValue(samples, 'muster_daemon_info', { daemon: 'relay' }), 1);
          const status = (await (await request(`${listening.admin}/v1/status`)).body.json()) as {
            daemon: string;
            status: { clients: number; prefixes: { prefix: string; versions: number }[] };
          };
          assert.equal(status.daemon, 'relay');
          assert.equal(status.status.clients, 1);
          assert.deepEqual(
            status.status.prefixes.map((p) => [p.prefix, p.versions]),
            [[prefix, 2]],
          );
        } finally {
          await h.close();
          await client.close();
        }
        run.child.kill('SIGTERM');
        assert.deepEqual(
          await within(run.exit, 20_000, 'exit after SIGTERM'),
          { code: 0, signal: null },
          run.stderr(),
        );
        assert.ok(run.lines.some((l) => l.includes('"event":"closed"')));
      } finally {
        run.kill();
        await store.close();
        await serve.close();
      }
    },
  );
});
