/** The dashboard's HTTP side without a browser: SSE snapshots and resync, and the write actions' tokens. */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import pino from 'pino';
import { initConfig, publishConfig } from '../../src/config/index.js';
import { type Daemon, runDaemon } from '../../src/daemon/index.js';
import { MemoryStore } from '../../src/store/index.js';
import { mountUi } from '../../src/ui/index.js';

const TOKEN = 'a-test-token-0123456789';

interface Snap {
  seq: number;
  configs: { name: string; versions: { version: number; cancelledAt?: number }[] }[];
  services: { name: string; pins: Record<string, string> }[];
}

/** Reads server-sent `snapshot` events until `pred` holds on one; then closes the stream. */
async function snapshotUntil(url: string, pred: (s: Snap) => boolean): Promise<Snap> {
  const ac = new AbortController();
  const res = await fetch(`${url}/v1/ui/events`, { signal: ac.signal });
  assert.equal(res.headers.get('content-type'), 'text/event-stream; charset=utf-8');
  const reader = (res.body as ReadableStream<Uint8Array>).getReader();
  const decoder = new TextDecoder();
  let buf = '';
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) throw new Error('the stream ended');
      buf += decoder.decode(value, { stream: true });
      let i: number;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const frame = buf.slice(0, i);
        buf = buf.slice(i + 2);
        const data = /^data: (.*)$/m.exec(frame)?.[1];
        if (!frame.startsWith('event: snapshot') || data === undefined) continue;
        const s = JSON.parse(data) as Snap;
        if (pred(s)) return s;
      }
    }
  } finally {
    ac.abort();
  }
}

describe('muster ui server', () => {
  let store: MemoryStore;
  let readOnly: Daemon;
  let writable: Daemon;
  const start = (writeToken?: string): Promise<Daemon> =>
    runDaemon(
      {
        name: 'ui',
        handleSignals: false,
        logger: pino({ level: 'silent' }),
        admin: { listen: '127.0.0.1:0' },
      },
      async (ctx) => {
        const ui = mountUi(ctx.admin, { store, ...(writeToken === undefined ? {} : { writeToken }) });
        await ui.model.ready();
        return { stop: async () => ui.close() };
      },
    );
  before(async () => {
    store = new MemoryStore();
    await initConfig(store, 'app', { maxStaleness: '1s', maxClockSkew: '50ms', minLeadTime: '1200ms' });
    readOnly = await start();
    writable = await start(TOKEN);
  });
  after(async () => {
    await readOnly?.stop();
    await writable?.stop();
    await store?.close();
  });

  test(
    'each connection starts with a whole snapshot; changes made while away are there on reconnect',
    { timeout: 30_000 },
    async () => {
      const url = readOnly.ctx.admin.url;
      const first = await snapshotUntil(url, () => true);
      assert.deepEqual(
        first.configs.map((c) => c.name),
        ['app'],
      );
      // A change while no page is connected…
      const v = await publishConfig(store, 'app', { n: 1 }, { in: '1m' });
      // …is in the first snapshot of the next connection (the resync), without any replay.
      const again = await snapshotUntil(url, () => true);
      assert.deepEqual(
        again.configs[0]?.versions.map((x) => x.version),
        [v.version],
      );
      // A live connection gets the change as a new snapshot.
      const live = snapshotUntil(url, (s) =>
        s.services.some((x) => x.name === 'svc' && x.pins['3'] === 'i1'),
      );
      await store.put('/muster/services/svc/pins/3', JSON.stringify({ instance: 'i1' }));
      await live;
    },
  );

  test(
    'writes: refused without a token (read-only) or with a wrong one; allowed with it; store refusals keep their code',
    { timeout: 30_000 },
    async () => {
      const post = async (
        d: Daemon,
        path: string,
        body: unknown,
        token?: string,
      ): Promise<{ status: number; json: { error?: { code: string } } & Record<string, unknown> }> => {
        const res = await fetch(`${d.ctx.admin.url}${path}`, {
          method: 'POST',
          headers: {
            'content-type': 'application/json',
            ...(token === undefined ? {} : { authorization: `Bearer ${token}` }),
          },
          body: JSON.stringify(body),
        });
        return { status: res.status, json: (await res.json()) as { error?: { code: string } } };
      };
      const pin = { service: 'svc', partition: '5', instance: 'i2' };
      const ro = await post(readOnly, '/v1/ui/pin', pin, TOKEN);
      assert.equal(ro.status, 401);
      assert.equal(ro.json.error?.code, 'MUSTER_UNAUTHENTICATED');
      const wrong = await post(writable, '/v1/ui/pin', pin, 'not-the-token-at-all');
      assert.equal(wrong.json.error?.code, 'MUSTER_UNAUTHENTICATED');
      assert.equal(await store.get('/muster/services/svc/pins/5'), undefined, 'state unchanged');
      const ok = await post(writable, '/v1/ui/pin', pin, TOKEN);
      assert.equal(ok.status, 200);
      assert.ok(await store.get('/muster/services/svc/pins/5'));
      assert.equal(
        (await post(writable, '/v1/ui/unpin', { service: 'svc', partition: '5' }, TOKEN)).status,
        200,
      );
      assert.equal(await store.get('/muster/services/svc/pins/5'), undefined);
      const bad = await post(writable, '/v1/ui/pin', { service: 'svc' }, TOKEN);
      assert.equal(bad.json.error?.code, 'MUSTER_INVALID_ARGUMENT');
      // The store side refuses: the code reaches the page unchanged.
      const missing = await post(writable, '/v1/ui/cancel', { config: 'app', version: 999 }, TOKEN);
      assert.equal(missing.status, 404);
      assert.equal(missing.json.error?.code, 'MUSTER_NOT_FOUND');
      const far = await publishConfig(store, 'app', { n: 3 }, { in: '10m' });
      const cancelled = await post(writable, '/v1/ui/cancel', { config: 'app', version: far.version }, TOKEN);
      assert.equal(cancelled.status, 200);
    },
  );
});
