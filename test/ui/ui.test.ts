/**
 * The dashboard end to end: a real daemon serving the page, a real memory store with real partition
 * members and config handles, and headless Chromium (Debian's `chromium`, driven by playwright-core).
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type BrowserContext, chromium, type Page } from 'playwright-core';
import { initConfig, openConfig, publishConfig, recordHolding } from '../../src/config/index.js';
import { type Daemon, runDaemon } from '../../src/daemon/index.js';
import {
  joinPartitioned,
  openServiceView,
  type PartitionedHandle,
  putRoute,
} from '../../src/partitions/index.js';
import { MemoryStore } from '../../src/store/index.js';
import { mountUi } from '../../src/ui/index.js';
import pino from 'pino';

const CHROMIUM = '/usr/bin/chromium';
const have = existsSync(CHROMIUM);
if (!have && process.env['MUSTER_REQUIRE_SERVICES'] === '1') throw new Error(`${CHROMIUM} is missing`);

const quiet = {
  warn: () => undefined,
  info: () => undefined,
  error: () => undefined,
  debug: () => undefined,
};
const idle = (_p: string, { signal }: { signal: AbortSignal }): Promise<void> =>
  new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));

describe('muster ui in headless Chromium', { skip: have ? false : `${CHROMIUM} is not installed` }, () => {
  let store: MemoryStore;
  let daemon: Daemon;
  let browser: BrowserContext;
  let page: Page;
  let profile: string;
  const members: PartitionedHandle[] = [];
  const closers: (() => Promise<void> | void)[] = [];

  before(async () => {
    store = new MemoryStore();
    daemon = await runDaemon(
      {
        name: 'ui',
        handleSignals: false,
        logger: pino({ level: 'silent' }),
        admin: { listen: '127.0.0.1:0' },
      },
      async (ctx) => {
        const ui = mountUi(ctx.admin, { store });
        await ui.model.ready();
        return { stop: async () => ui.close() };
      },
    );
    profile = mkdtempSync(join(tmpdir(), 'muster-ui-chromium-'));
    // A new, empty profile (playwright passes it as --user-data-dir).
    browser = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
      viewport: { width: 1440, height: 960 },
    });
    page = await browser.newPage();
  });
  after(async () => {
    await browser?.close();
    for (const c of closers.reverse()) await c();
    for (const m of members) await m.close();
    await daemon?.stop();
    await store?.close();
    if (profile !== undefined) rmSync(profile, { recursive: true, force: true });
  });

  test(
    'the map renders, a hand-off shows within a second, a countdown flips, a token-less write is refused',
    { timeout: 90_000 },
    async () => {
      const view = openServiceView(store, 'orders');
      closers.push(() => view.close());
      const owners = (): Map<string, string> => new Map([...view.owners].map(([p, o]) => [p, o.instance]));
      /** Resolves when `pred` holds on the watched view (an event, not a sleep). */
      const until = (pred: () => boolean): Promise<void> =>
        new Promise((resolve) => {
          if (pred()) return resolve();
          const off = view.subscribe(() => {
            if (pred()) {
              off();
              resolve();
            }
          });
        });
      for (const id of ['api-1', 'api-2', 'api-3'])
        members.push(
          await joinPartitioned(store, {
            service: 'orders',
            id,
            partitions: 24,
            ttl: '2s',
            logger: quiet,
            onAcquire: idle,
            address: `127.0.0.1:${9100 + members.length}`,
          }),
        );
      await view.ready();
      await until(() => view.owners.size === 24 && new Set(owners().values()).size === 3);
      await putRoute(store, 'orders', 'customer-42', 'api-2');
      await store.put('/muster/services/orders/pins/7', JSON.stringify({ instance: 'api-1' }));

      // A configuration with a live holder.
      await initConfig(store, 'pricing', { maxStaleness: '1s', maxClockSkew: '50ms', minLeadTime: '1200ms' });
      const handle = openConfig(store, 'pricing');
      const { id: lease } = await store.grantLease(60);
      const recorder = recordHolding(handle, { store, instance: 'api-1', lease });
      closers.push(
        () => handle.close(),
        () => recorder.close(),
      );
      await handle.ready();

      await page.goto(`${daemon.ctx.admin.url}/`);
      await page.waitForSelector('#conn.live');
      await page.waitForFunction(() => document.querySelectorAll('[data-cell^="orders/"]').length === 24);
      const rendered = await page.$$eval('[data-cell^="orders/"]', (els) =>
        els.map((e) => (e as HTMLElement).dataset['owner']),
      );
      assert.deepEqual(
        rendered,
        [...Array(24).keys()].map((i) => owners().get(String(i))),
      );

      // A proxy publishes its held queues (as each proxy worker does, under its lease): the page shows them.
      await store.put(
        '/muster/status/orders/proxies/px-1',
        JSON.stringify({ id: 'px-1', pid: 1, held: { 'partition:3': 7 }, total: 7, at: Date.now() }),
        { lease },
      );
      await page.waitForSelector('[data-service-section="orders"] [data-held="partition:3"]');
      assert.match(
        await page.$eval('[data-held="partition:3"]', (e) => (e as HTMLElement).innerText),
        /partition:3\s+7/,
      );

      // Hand-off: api-3 leaves; each of its partitions must show its new owner within a second of the store event.
      const before3 = [...owners()].filter(([, i]) => i === 'api-3').map(([p]) => p);
      assert.ok(before3.length > 0);
      const leaving = members.pop() as PartitionedHandle;
      const closing = leaving.close();
      const moved = before3[0] as string;
      await until(() => {
        const o = owners().get(moved);
        return o !== undefined && o !== 'api-3';
      });
      const newOwner = owners().get(moved) as string;
      const t0 = Date.now();
      await page.waitForFunction(
        ([cell, owner]) =>
          document.querySelector<HTMLElement>(`[data-cell="${cell}"]`)?.dataset['owner'] === owner,
        [`orders/${moved}`, newOwner] as const,
        { timeout: 1000 },
      );
      assert.ok(Date.now() - t0 < 1000);
      await closing;

      // A scheduled version counts down to zero and the timeline flips it to current.
      const v1 = await publishConfig(store, 'pricing', { discount: 5 }, { in: '3s', note: 'spring prices' });
      const row = `[data-version="pricing/${v1.version}"]`;
      await page.waitForSelector(`${row}[data-state="scheduled"] [data-countdown]`);
      const text = await page.textContent(`${row} [data-countdown]`);
      assert.match(text ?? '', /^in [1-3]s$/);
      await page.waitForSelector(`${row}[data-state="current"]`, { timeout: 6000 });
      assert.ok(
        Date.now() >= v1.activateAt - 300,
        'flipped no earlier than its instant (page clock corrected by the server)',
      );
      await page.waitForFunction(
        (sel) => document.querySelector(`${sel} [data-held]`)?.textContent === '1/1',
        row,
      );

      // A write without a token is refused, with its code on the page.
      const v2 = await publishConfig(
        store,
        'pricing',
        { discount: 10 },
        { in: '10m', note: 'summer prices' },
      );
      await page.waitForSelector(`[data-version="pricing/${v2.version}"] button[data-action="cancel"]`);
      page.once('dialog', (d) => void d.accept());
      await page.click(`[data-version="pricing/${v2.version}"] button[data-action="cancel"]`);
      await page.waitForSelector('[data-error-code]');
      assert.equal(await page.textContent('[data-error-code]'), 'MUSTER_UNAUTHENTICATED');
      const res = await fetch(`${daemon.ctx.admin.url}/v1/ui/cancel`, {
        method: 'POST',
        body: JSON.stringify({ config: 'pricing', version: v2.version }),
      });
      assert.equal(res.status, 401);
      assert.equal(((await res.json()) as { error: { code: string } }).error.code, 'MUSTER_UNAUTHENTICATED');

      const shot = process.env['MUSTER_UI_SCREENSHOT'];
      if (shot !== undefined) {
        await page.waitForSelector('#toast', { state: 'hidden', timeout: 10_000 });
        await page.screenshot({ path: shot, fullPage: true });
      }
    },
  );
});
