/**
 * etcd's HTTP/JSON gateway on muster serve's client port (issue 13 §3): the same port answers gRPC
 * (etcdctl, the etcd engine) and HTTP/1.1 JSON (curl, gateway clients) — KV, txn, a streaming watch,
 * leases, auth, /health and /version.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { Registry } from 'prom-client';
import { startServer } from '../../src/server/index.js';
import { openStore } from '../../src/store/index.js';
import { ETCD_INSTALL_HINT, needBinary, startEtcd } from '../../src/testing/index.js';

const b64 = (s: string): string => Buffer.from(s).toString('base64');

async function post(
  base: string,
  path: string,
  body: unknown,
  token?: string,
): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(`${base}${path}`, {
    method: 'POST',
    body: JSON.stringify(body),
    headers: token === undefined ? {} : { authorization: token },
  });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}

/** Reads newline-delimited JSON objects from a streaming POST until `done` says enough. */
function streamLines(
  base: string,
  path: string,
  body: unknown,
  done: (lines: Record<string, unknown>[]) => boolean,
): Promise<Record<string, unknown>[]> {
  return new Promise((resolve, reject) => {
    const lines: Record<string, unknown>[] = [];
    const req = request(`${base}${path}`, { method: 'POST' }, (res) => {
      let buf = '';
      res.on('data', (d: Buffer) => {
        buf += d.toString();
        let i;
        while ((i = buf.indexOf('\n')) >= 0) {
          lines.push(JSON.parse(buf.slice(0, i)) as Record<string, unknown>);
          buf = buf.slice(i + 1);
          if (done(lines)) {
            req.destroy();
            resolve(lines);
          }
        }
      });
    });
    req.on('error', (e) => (done(lines) ? undefined : reject(e)));
    req.end(JSON.stringify(body));
  });
}

describe('the HTTP/JSON gateway on the gRPC port', () => {
  test(
    'curl-style JSON and gRPC on one port: kv, txn, watch stream, leases, health, version',
    { timeout: 60_000 },
    async () => {
      const dir = mkdtempSync(join(tmpdir(), 'muster-gw-'));
      const registry = new Registry();
      const server = await startServer({ dataDir: dir, listen: '127.0.0.1:0', metrics: registry });
      const base = `http://${server.host}:${server.port}`;
      const store = await openStore(server.url);
      try {
        assert.deepEqual(await (await fetch(`${base}/health`)).json(), { health: 'true', reason: '' });
        assert.equal(
          ((await (await fetch(`${base}/version`)).json()) as { etcdserver: string }).etcdserver,
          '3.4.25',
        );
        const put = await post(base, '/v3/kv/put', { key: b64('/g/a'), value: b64('1') });
        assert.equal(put.status, 200);
        assert.equal((put.json.header as { revision: string }).revision, '2');
        // gRPC on the same port sees it.
        assert.equal(Buffer.from((await store.get('/g/a'))?.value ?? []).toString(), '1');
        await store.put('/g/b', '2');
        const range = await post(base, '/v3/kv/range', { key: b64('/g/'), range_end: b64('/g0') });
        assert.deepEqual(
          (range.json.kvs as { key: string; value: string }[]).map((kv) => [
            Buffer.from(kv.key, 'base64').toString(),
            Buffer.from(kv.value, 'base64').toString(),
          ]),
          [
            ['/g/a', '1'],
            ['/g/b', '2'],
          ],
        );
        const txn = await post(base, '/v3/kv/txn', {
          compare: [{ key: b64('/g/a'), result: 'EQUAL', target: 'VALUE', value: b64('1') }],
          success: [{ request_put: { key: b64('/g/a'), value: b64('one'), prev_kv: true } }],
        });
        assert.equal(txn.json.succeeded, true);
        const events = (lines: Record<string, unknown>[]): { type?: string }[] =>
          lines.flatMap((l) => (l.result as { events?: { type?: string }[] }).events ?? []);
        const watch = streamLines(
          base,
          '/v3/watch',
          { create_request: { key: b64('/g/'), range_end: b64('/g0'), start_revision: '2' } },
          (ls) => events(ls).length >= 3,
        );
        const lines = await watch;
        assert.equal((lines[0]?.result as { created: boolean }).created, true);
        // etcd's gateway leaves default values out: a PUT event (type 0) has no `type`.
        assert.deepEqual(
          events(lines).map((e) => e.type ?? 'PUT'),
          ['PUT', 'PUT', 'PUT'],
        );
        const grant = await post(base, '/v3/lease/grant', { TTL: 30 });
        const id = grant.json.ID as string;
        assert.ok(BigInt(id) > 0n);
        const ka = await post(base, '/v3/lease/keepalive', { ID: id });
        assert.equal((ka.json.result as { TTL: string }).TTL, '30');
        const ttl = await post(base, '/v3/kv/lease/timetolive', { ID: id });
        assert.equal(ttl.json.grantedTTL, '30');
        assert.equal((await post(base, '/v3/kv/lease/revoke', { ID: id })).status, 200);
        const bad = await post(base, '/v3/kv/put', { value: b64('x') });
        assert.equal(bad.status, 400);
        assert.match(String(bad.json.error), /key is not provided/);
        assert.equal((await post(base, '/v3/nope', {})).status, 404);
        const metrics = await fetch(`${base}/metrics`);
        assert.equal(metrics.status, 200);
        assert.match(await metrics.text(), /# TYPE /);
        const auth = await post(base, '/v3/auth/authenticate', { name: 'root', password: 'x' });
        assert.match(String(auth.json.error), /authentication is not enabled/);
      } finally {
        await store.close();
        await server.close();
        rmSync(dir, { recursive: true, force: true });
      }
    },
  );

  /**
   * etcd's grpc-gateway writes JSON without default-valued fields (jsonpb without EmitDefaults):
   * the same requests to muster serve and to a real etcd 3.4 must give the same JSON, apart from
   * what differs by design (ids, raft term).
   */
  test(
    'the same JSON as etcd’s gateway: no default-valued fields',
    { timeout: 60_000, skip: needBinary('etcd', ETCD_INSTALL_HINT) },
    async () => {
      const dir = mkdtempSync(join(tmpdir(), 'muster-gw-'));
      const [server, cluster] = await Promise.all([
        startServer({ dataDir: dir, listen: '127.0.0.1:0' }),
        startEtcd(),
      ]);
      /** Ids and the raft term differ by design; lease ids are masked where they appear. */
      const mask = (v: unknown): unknown => {
        if (Array.isArray(v)) return v.map(mask);
        if (v === null || typeof v !== 'object') return v;
        const out: Record<string, unknown> = {};
        for (const [k, x] of Object.entries(v)) {
          out[k] = ['cluster_id', 'member_id', 'raft_term', 'ID', 'lease'].includes(k) ? '…' : mask(x);
        }
        return out;
      };
      const scenario = async (base: string): Promise<unknown[]> => {
        const out: unknown[] = [];
        const call = async (path: string, body: unknown): Promise<Record<string, unknown>> => {
          const r = await post(base, path, body);
          out.push({ path, status: r.status, json: mask(r.json) });
          return r.json;
        };
        await call('/v3/kv/put', { key: b64('/s/a'), value: b64('1') });
        await call('/v3/kv/put', { key: b64('/s/a'), value: b64('2'), prev_kv: true });
        await call('/v3/kv/put', { key: b64('/s/empty'), value: '' });
        await call('/v3/kv/range', { key: b64('/s/'), range_end: b64('/s0') });
        await call('/v3/kv/range', { key: b64('/s/none') });
        await call('/v3/kv/range', { key: b64('/s/'), range_end: b64('/s0'), count_only: true });
        await call('/v3/kv/range', { key: b64('/s/'), range_end: b64('/s0'), limit: 1 });
        await call('/v3/kv/deleterange', { key: b64('/s/none') });
        await call('/v3/kv/txn', {
          compare: [{ key: b64('/s/a'), result: 'EQUAL', target: 'VALUE', value: b64('nope') }],
          success: [{ request_put: { key: b64('/s/a'), value: b64('x') } }],
        });
        await call('/v3/kv/txn', {
          compare: [{ key: b64('/s/a'), result: 'GREATER', target: 'VERSION', version: '0' }],
          success: [
            { request_range: { key: b64('/s/a') } },
            { request_put: { key: b64('/s/a'), value: b64('3') } },
            { request_delete_range: { key: b64('/s/none') } },
          ],
        });
        const grant = await call('/v3/lease/grant', { TTL: 30 });
        await call('/v3/kv/put', { key: b64('/s/leased'), value: b64('v'), lease: grant.ID });
        await call('/v3/kv/lease/timetolive', { ID: grant.ID });
        await call('/v3/kv/lease/timetolive', { ID: '12345' });
        await call('/v3/kv/lease/revoke', { ID: grant.ID });
        await call('/v3/kv/deleterange', { key: b64('/s/'), range_end: b64('/s0'), prev_kv: true });
        await call('/v3/auth/authenticate', { name: 'root', password: 'x' });
        const lines = await streamLines(
          base,
          '/v3/watch',
          { create_request: { key: b64('/s/'), range_end: b64('/s0'), start_revision: '2' } },
          (ls) => ls.length >= 2,
        );
        out.push(...lines.map(mask));
        return out;
      };
      try {
        const etcd = await scenario(`http://${cluster.endpoints[0] as string}`);
        const mine = await scenario(`http://${server.host}:${server.port}`);
        assert.deepEqual(mine, etcd);
      } finally {
        await server.close();
        await cluster.close();
        rmSync(dir, { recursive: true, force: true });
      }
    },
  );
});
