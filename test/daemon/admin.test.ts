import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { pino } from 'pino';
import { Counter } from 'prom-client';
import {
  type Daemon,
  type DaemonBody,
  type DaemonOptions,
  readJsonBody,
  runDaemon,
  startSse,
} from '../../src/daemon/index.js';
import { MusterError } from '../../src/errors.js';
import { parsePrometheusText, sampleValue } from './prom-text.js';

const quiet = pino({ level: 'silent' });
const TOKEN = 'abcdefghijklmnopqrstuvwxyz012345';
const dir = mkdtempSync(join(tmpdir(), 'muster-admin-'));
after(() => rmSync(dir, { recursive: true, force: true }));

async function daemon(
  options: Partial<DaemonOptions> = {},
  body: (ctx: Daemon['ctx']) => Partial<DaemonBody> = () => ({}),
): Promise<Daemon> {
  return runDaemon({ name: 'test', logger: quiet, handleSignals: false, ...options }, async (ctx) => ({
    stop: async () => undefined,
    ...body(ctx),
  }));
}

/** A response body: an error envelope, or any object. */
type Json = { error: { code: string; message: string; details: Record<string, unknown> } } & Record<
  string,
  unknown
>;

async function get(
  url: string,
  init: { method?: string; token?: string; body?: string } = {},
): Promise<{ status: number; headers: Headers; text: string; json: () => Json }> {
  const res = await fetch(url, {
    method: init.method ?? 'GET',
    headers: init.token === undefined ? {} : { authorization: `Bearer ${init.token}` },
    ...(init.body === undefined ? {} : { body: init.body }),
  });
  const text = await res.text();
  return { status: res.status, headers: res.headers, text, json: () => JSON.parse(text) as Json };
}

describe('daemon runtime: admin server', () => {
  test(
    'serves /healthz, /v1/status and /metrics on loopback; stop() ends it with 0',
    { timeout: 20_000 },
    async () => {
      const d = await daemon({}, () => ({ status: () => ({ partitions: 3 }) }));
      assert.match(d.ctx.admin.url, /^http:\/\/127\.0\.0\.1:\d+$/);
      assert.equal(d.state, 'running');
      const health = await get(`${d.ctx.admin.url}/healthz`);
      assert.equal(health.status, 200);
      assert.deepEqual(health.json(), { status: 'ok' });
      const status = (await get(`${d.ctx.admin.url}/v1/status`)).json();
      assert.equal(status.daemon, 'test');
      assert.equal(status.state, 'running');
      assert.equal(status.pid, process.pid);
      assert.deepEqual(status.status, { partitions: 3 });
      const metrics = await get(`${d.ctx.admin.url}/metrics`);
      assert.equal(metrics.status, 200);
      assert.match(metrics.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
      const samples = parsePrometheusText(metrics.text);
      assert.equal(sampleValue(samples, 'muster_daemon_info', { daemon: 'test' }), 1);
      assert.equal(sampleValue(samples, 'muster_daemon_state', { state: 'running' }), 1);
      assert.ok((sampleValue(samples, 'process_cpu_seconds_total') ?? -1) >= 0);
      const url = d.ctx.admin.url;
      assert.equal(await d.stop(), 0);
      assert.equal(d.state, 'stopped');
      assert.equal(await d.done, 0);
      await assert.rejects(fetch(`${url}/healthz`), 'the admin server is closed');
    },
  );

  test('routes with :params, JSON bodies, 204, 404 and 405', { timeout: 20_000 }, async () => {
    const d = await daemon({}, (ctx) => {
      ctx.admin.route('GET', '/v1/partitions/:partition', (_req, _res, params, url) => ({
        partition: params.partition,
        verbose: url.searchParams.get('verbose'),
      }));
      ctx.admin.route('GET', '/v1/partitions/all', () => ({ all: true }));
      ctx.admin.route('POST', '/v1/echo', async (req) => ({ got: await readJsonBody(req) }));
      ctx.admin.route('DELETE', '/v1/partitions/:partition', () => undefined);
      return {};
    });
    try {
      const base = d.ctx.admin.url;
      assert.deepEqual((await get(`${base}/v1/partitions/p%2F7?verbose=1`)).json(), {
        partition: 'p/7',
        verbose: '1',
      });
      assert.deepEqual(
        (await get(`${base}/v1/partitions/all`)).json(),
        { all: true },
        'a literal segment wins',
      );
      assert.deepEqual((await get(`${base}/v1/echo`, { method: 'POST', body: '{"a":[1,2]}' })).json(), {
        got: { a: [1, 2] },
      });
      const notJson = await get(`${base}/v1/echo`, { method: 'POST', body: '{nope' });
      assert.equal(notJson.status, 400);
      assert.equal(notJson.json().error.code, 'MUSTER_INVALID_ARGUMENT');
      assert.equal((await get(`${base}/v1/partitions/3`, { method: 'DELETE' })).status, 204);
      const missing = await get(`${base}/v1/nothing`);
      assert.equal(missing.status, 404);
      assert.equal(missing.json().error.code, 'MUSTER_NOT_FOUND');
      const wrong = await get(`${base}/v1/echo`);
      assert.equal(wrong.status, 405);
      assert.equal(wrong.headers.get('allow'), 'POST');
      assert.equal(wrong.json().error.code, 'MUSTER_METHOD_NOT_ALLOWED');
      assert.throws(
        () => d.ctx.admin.route('GET', '/v1/partitions/:other', () => 1),
        (err: unknown) => err instanceof MusterError && err.code === 'MUSTER_INVALID_ARGUMENT',
        'a route with the same shape is refused',
      );
      assert.throws(() => d.ctx.admin.route('get', '/x', () => 1), /upper-case/);
      assert.throws(() => d.ctx.admin.route('GET', 'x/y', () => 1), /admin route/);
    } finally {
      await d.stop();
    }
  });

  test(
    'a thrown MusterError is sent with httpStatusOf(code); other throws are 500 MUSTER_INTERNAL',
    { timeout: 20_000 },
    async () => {
      const d = await daemon({}, (ctx) => {
        ctx.admin.route('GET', '/v1/owner/:p', (_req, _res, params) => {
          throw new MusterError('MUSTER_NOT_OWNER', `partition ${params.p} is not ours`, {
            details: { partition: params.p },
          });
        });
        ctx.admin.route('GET', '/v1/stale', async () => {
          throw new MusterError('MUSTER_STALE_CONFIG', 'cannot prove freshness');
        });
        ctx.admin.route('GET', '/v1/bug', () => {
          throw new TypeError('x is undefined');
        });
        return {};
      });
      try {
        const owner = await get(`${d.ctx.admin.url}/v1/owner/7`);
        assert.equal(owner.status, 421);
        assert.deepEqual(owner.json(), {
          error: {
            code: 'MUSTER_NOT_OWNER',
            message: 'partition 7 is not ours',
            details: { partition: '7' },
          },
        });
        assert.equal((await get(`${d.ctx.admin.url}/v1/stale`)).status, 503);
        const bug = await get(`${d.ctx.admin.url}/v1/bug`);
        assert.equal(bug.status, 500);
        assert.equal(bug.json().error.code, 'MUSTER_INTERNAL');
        assert.match(bug.json().error.message, /x is undefined/);
      } finally {
        await d.stop();
      }
    },
  );

  test('a token is required beyond loopback: refused at start without one', { timeout: 20_000 }, async () => {
    await assert.rejects(
      daemon({ admin: { listen: '0.0.0.0:0' } }),
      (err: unknown) =>
        err instanceof MusterError &&
        err.code === 'MUSTER_INVALID_ARGUMENT' &&
        /without a token/.test(err.message),
    );
    const short = join(dir, 'short-token');
    writeFileSync(short, 'tooshort\n');
    await assert.rejects(
      daemon({ admin: { listen: '0.0.0.0:0', tokenFile: short } }),
      (err: unknown) => err instanceof MusterError && /at least 16 characters/.test(err.message),
    );
    await assert.rejects(
      daemon({ admin: { listen: '0.0.0.0:0', tokenFile: join(dir, 'missing') } }),
      (err: unknown) =>
        err instanceof MusterError &&
        err.code === 'MUSTER_INVALID_ARGUMENT' &&
        /cannot read/.test(err.message),
    );
    const file = join(dir, 'token');
    writeFileSync(file, `${TOKEN}\n`);
    const d = await daemon({ admin: { listen: '0.0.0.0:0', tokenFile: file } });
    try {
      assert.match(d.ctx.admin.url, /^http:\/\/0\.0\.0\.0:\d+$/);
      const port = new URL(d.ctx.admin.url).port;
      assert.equal((await get(`http://127.0.0.1:${port}/metrics`, { token: TOKEN })).status, 200);
    } finally {
      await d.stop();
    }
  });

  test('the token is checked on every route but /healthz', { timeout: 20_000 }, async () => {
    const file = join(dir, 'token-loopback');
    writeFileSync(file, `  ${TOKEN}  \nignored second line\n`);
    const d = await daemon({ admin: { tokenFile: file } }, (ctx) => {
      ctx.admin.route('GET', '/v1/secret', () => ({ secret: 42 }));
      return {};
    });
    try {
      const base = d.ctx.admin.url;
      for (const path of ['/metrics', '/v1/status', '/v1/secret', '/v1/unknown']) {
        const none = await get(`${base}${path}`);
        assert.equal(none.status, 401, path);
        assert.equal(none.json().error.code, 'MUSTER_UNAUTHENTICATED');
        assert.equal(none.headers.get('www-authenticate'), 'Bearer');
        assert.equal(
          (await get(`${base}${path}`, { token: `${TOKEN}x` })).status,
          401,
          `${path}: a longer token`,
        );
        assert.equal(
          (await get(`${base}${path}`, { token: TOKEN.slice(1) })).status,
          401,
          `${path}: a shorter token`,
        );
      }
      assert.equal((await get(`${base}/v1/secret`, { token: TOKEN })).status, 200);
      assert.equal((await get(`${base}/v1/unknown`, { token: TOKEN })).status, 404);
      assert.equal((await get(`${base}/healthz`)).status, 200, 'probes need no token');
    } finally {
      await d.stop();
    }
  });

  test('SSE: a handler streams until the daemon stops', { timeout: 20_000 }, async () => {
    const d = await daemon({}, (ctx) => {
      ctx.admin.route('GET', '/v1/events', (_req, res) => {
        const send = startSse(res);
        send('hello', { n: 1 });
        const t = setInterval(() => send('tick', { at: Date.now() }), 20);
        res.on('close', () => clearInterval(t));
      });
      return {};
    });
    const received = await new Promise<string>((resolve, reject) => {
      const req = request(`${d.ctx.admin.url}/v1/events`, (res) => {
        assert.equal(res.headers['content-type'], 'text/event-stream; charset=utf-8');
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => {
          text += c;
          if (text.includes('event: tick')) void d.stop();
        });
        res.on('close', () => resolve(text));
        res.on('error', () => resolve(text));
      });
      req.on('error', reject);
      req.end();
    });
    assert.match(received, /^event: hello\ndata: \{"n":1\}\n\n/);
    assert.equal(await d.done, 0);
  });

  test(
    'stopping: /healthz answers 503 while the body drains; the body sees stopping, then force',
    { timeout: 20_000 },
    async () => {
      let release: () => void = () => undefined;
      const drained = new Promise<void>((r) => (release = r));
      let sawForce = false;
      const d = await daemon({ shutdownTimeout: '30s' }, () => ({
        stop: async (force) => {
          await Promise.race([
            drained,
            new Promise((r) => force.addEventListener('abort', r, { once: true })),
          ]);
          sawForce = force.aborted;
        },
      }));
      const counter = new Counter({ name: 'test_things_total', help: 'things', registers: [d.ctx.metrics] });
      counter.inc(3);
      const done = d.stop();
      assert.equal(d.ctx.stopping.aborted, true);
      assert.equal(d.state, 'stopping');
      const health = await get(`${d.ctx.admin.url}/healthz`);
      assert.equal(health.status, 503);
      assert.deepEqual(health.json(), { status: 'stopping' });
      const samples = parsePrometheusText((await get(`${d.ctx.admin.url}/metrics`)).text);
      assert.equal(sampleValue(samples, 'test_things_total'), 3);
      assert.equal(sampleValue(samples, 'muster_daemon_state', { state: 'stopping' }), 1);
      void d.stop({ force: true });
      assert.equal(d.ctx.forcing.aborted, true);
      assert.equal(await done, 143, 'forced, no signal: 128 + SIGTERM');
      assert.equal(sawForce, true);
      release();
    },
  );

  test('a body whose stop throws, or that calls fail(), ends with 1', { timeout: 20_000 }, async () => {
    const throwing = await daemon({}, () => ({
      stop: async () => {
        throw new Error('flush failed');
      },
    }));
    assert.equal(await throwing.stop(), 1);
    const failing = await daemon({}, (ctx) => {
      setImmediate(() => ctx.fail(new MusterError('MUSTER_SESSION_LOST', 'gone')));
      return {};
    });
    assert.equal(await failing.done, 1);
  });

  test(
    'unhealthy bodies answer 503; reload without a reload hook is refused',
    { timeout: 20_000 },
    async () => {
      const d = await daemon({ admin: { listen: '127.0.0.1:0' } }, () => ({
        health: () => ({ ok: false, reason: 'session lost' }),
      }));
      try {
        const health = await get(`${d.ctx.admin.url}/healthz`);
        assert.equal(health.status, 503);
        assert.deepEqual(health.json(), { status: 'unhealthy', reason: 'session lost' });
        await assert.rejects(
          d.reload(),
          (err: unknown) => err instanceof MusterError && err.code === 'MUSTER_INVALID_ARGUMENT',
        );
        const viaApi = await get(`${d.ctx.admin.url}/v1/reload`, { method: 'POST' });
        assert.equal(viaApi.status, 400);
        assert.equal(viaApi.json().error.code, 'MUSTER_INVALID_ARGUMENT');
      } finally {
        await d.stop();
      }
    },
  );

  test(
    'bad options and a taken admin port are coded errors; admin: false serves nothing',
    { timeout: 20_000 },
    async () => {
      await assert.rejects(daemon({ name: 'Bad Name' }), /daemon name/);
      await assert.rejects(daemon({ logLevel: 'loud' }), /log level/);
      await assert.rejects(daemon({ shutdownTimeout: 'soon' }), /not a duration/);
      const first = await daemon();
      try {
        await assert.rejects(
          daemon({ admin: { listen: new URL(first.ctx.admin.url).host } }),
          (err: unknown) => err instanceof MusterError && err.code === 'MUSTER_ADDRESS_IN_USE',
        );
      } finally {
        await first.stop();
      }
      const none = await daemon({ admin: false });
      assert.equal(none.ctx.admin.url, '');
      assert.equal(await none.stop(), 0);
    },
  );
});

describe('the Prometheus text checker', () => {
  test('accepts the exposition format and rejects what is not', { timeout: 5_000 }, () => {
    const good =
      '# HELP a_total things\n# TYPE a_total counter\na_total{x="1",y="q\\"uote"} 3\n# TYPE h histogram\nh_bucket{le="+Inf"} 2\nh_sum 1.5e-3\nh_count 2\n';
    const s = parsePrometheusText(good);
    assert.equal(sampleValue(s, 'a_total', { y: 'q"uote' }), 3);
    assert.equal(sampleValue(s, 'h_sum'), 0.0015);
    assert.throws(() => parsePrometheusText('a_total 3\n'), /no TYPE line/);
    assert.throws(() => parsePrometheusText('# TYPE a counter\na{x=1} 3\n'), /not a sample/);
    assert.throws(() => parsePrometheusText('# TYPE a counter\na 3 4 5\n'), /not a sample/);
    assert.throws(() => parsePrometheusText('# TYPE a countr\n'), /unknown type/);
    assert.throws(() => parsePrometheusText('{"status":"ok"}'), /not a sample/);
    assert.throws(() => parsePrometheusText('# TYPE a gauge\na 1x\n'), /not a number/);
    assert.equal(Number.isNaN(sampleValue(parsePrometheusText('# TYPE a gauge\na Nan\n'), 'a')), true);
  });
});

describe('daemon runtime: POST /v1/reload', () => {
  test(
    'calls the body reload; a failed reload is a coded error and the daemon keeps running',
    { timeout: 20_000 },
    async () => {
      let reloads = 0;
      let fail = false;
      const d = await runDaemon({ name: 'reloads', logger: quiet, handleSignals: false }, async () => ({
        reload: async () => {
          if (fail) throw new MusterError('MUSTER_SCHEMA_VIOLATION', 'bad configuration file');
          reloads++;
        },
        stop: async () => undefined,
      }));
      try {
        const ok = await get(`${d.ctx.admin.url}/v1/reload`, { method: 'POST' });
        assert.equal(ok.status, 200);
        assert.deepEqual(ok.json(), { reloaded: true });
        fail = true;
        const bad = await get(`${d.ctx.admin.url}/v1/reload`, { method: 'POST' });
        assert.equal(bad.status, 422);
        assert.equal(bad.json().error.code, 'MUSTER_SCHEMA_VIOLATION');
        assert.equal(d.state, 'running');
        const samples = parsePrometheusText((await get(`${d.ctx.admin.url}/metrics`)).text);
        assert.equal(sampleValue(samples, 'muster_daemon_reloads_total', { result: 'ok' }), 1);
        assert.equal(sampleValue(samples, 'muster_daemon_reloads_total', { result: 'error' }), 1);
        assert.equal(reloads, 1);
      } finally {
        await d.stop();
      }
    },
  );
});
