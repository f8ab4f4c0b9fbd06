/**
 * `muster agent --ui`: the dashboard on the agent's API address, as real processes (`muster serve` as the
 * store, `muster agent` joining it). The page and the SSE snapshot show the agent's own service; the
 * read side needs no token on loopback, the agent's API keeps its token, and dashboard writes are refused.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { test } from 'node:test';
import { startTempServe } from '../../src/testing/index.js';

const bin = new URL('../../../bin/muster.js', import.meta.url).pathname;

interface Snapshot {
  writable: boolean;
  services: {
    name: string;
    partitions: string[];
    instances: { id: string }[];
    owners: Record<string, unknown>;
  }[];
}

/** Reads `event: snapshot` frames from an SSE response until `done` accepts one. */
async function snapshotWhere(
  url: string,
  done: (s: Snapshot) => boolean,
  signal: AbortSignal,
): Promise<Snapshot> {
  const res = await fetch(url, { signal });
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /^text\/event-stream/);
  const decoder = new TextDecoder();
  let buf = '';
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
    buf += decoder.decode(chunk, { stream: true });
    let i;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const frame = buf.slice(0, i);
      buf = buf.slice(i + 2);
      if (!/^event: snapshot$/m.test(frame)) continue;
      const data = frame
        .split('\n')
        .filter((l) => l.startsWith('data: '))
        .map((l) => l.slice(6))
        .join('\n');
      const s = JSON.parse(data) as Snapshot;
      if (done(s)) return s;
    }
  }
  throw new Error('the event stream ended before the expected snapshot');
}

test(
  'muster agent --ui serves the page and live snapshots showing its service; writes stay refused',
  { timeout: 60_000 },
  async () => {
    const serve = await startTempServe();
    const dir = mkdtempSync(join(tmpdir(), 'muster-agent-ui-'));
    const config = join(dir, 'agent.yaml');
    writeFileSync(
      config,
      `store: ${serve.url}
service: uisvc
partitions: { count: 2 }
stateDir: ${dir}/state
relay: false
run:
  command: ["/bin/sh", "-c", "exec sleep 600"]
`,
    );
    const child = spawn(process.execPath, [bin, 'agent', '--config', config, '--ui', '--log-level', 'warn'], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const abort = new AbortController();
    try {
      const url = await new Promise<string>((resolve, reject) => {
        child.once('exit', (code) => reject(new Error(`agent exited with ${code}`)));
        createInterface({ input: child.stdout }).on('line', (line) => {
          const m = /^muster agent: dashboard on (http:\/\/\S+)\/ \(read-only\)$/.exec(line);
          if (m !== null) resolve(m[1] as string);
        });
      });
      // The read side without a token (loopback), as a browser opens it.
      const page = await fetch(`${url}/`);
      assert.equal(page.status, 200);
      assert.match(await page.text(), /<script type="module" src="\/ui\/app.js">/);
      const app = await fetch(`${url}/ui/app.js`);
      assert.equal(app.headers.get('content-type'), 'text/javascript; charset=utf-8');
      assert.match(await app.text(), /EventSource/);

      // The SSE stream shows the agent's service, its instance owning both partitions.
      const snap = await snapshotWhere(
        `${url}/v1/ui/events`,
        (s) => {
          const svc = s.services.find((x) => x.name === 'uisvc');
          return svc !== undefined && svc.instances.length === 1 && Object.keys(svc.owners).length === 2;
        },
        abort.signal,
      );
      abort.abort();
      assert.equal(snap.writable, false);
      const svc = snap.services.find((x) => x.name === 'uisvc');
      assert.deepEqual(svc?.partitions, ['0', '1']);

      // The agent's own API still needs its token.
      const token = readFileSync(join(dir, 'state', 'uisvc.token'), 'utf8').trim();
      assert.equal((await fetch(`${url}/v1/status`)).status, 401);
      assert.equal(
        (await fetch(`${url}/v1/status`, { headers: { authorization: `Bearer ${token}` } })).status,
        200,
      );
      // Dashboard writes: refused without the token, and refused with it (no write token configured).
      const pin = (headers: Record<string, string>): Promise<Response> =>
        fetch(`${url}/v1/ui/pin`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', ...headers },
          body: JSON.stringify({ service: 'uisvc', partition: '0', instance: svc?.instances[0]?.id }),
        });
      const bare = await pin({});
      assert.equal(bare.status, 401);
      const withToken = await pin({ authorization: `Bearer ${token}` });
      assert.equal(withToken.status, 401);
      assert.match(((await withToken.json()) as { error: { message: string } }).error.message, /read-only/);
    } finally {
      abort.abort();
      if (child.exitCode === null) {
        child.kill('SIGTERM');
        await once(child, 'exit');
      }
      await serve.close();
      rmSync(dir, { recursive: true, force: true });
    }
  },
);
