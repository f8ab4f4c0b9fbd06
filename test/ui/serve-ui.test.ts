/** `muster serve --ui`: the dashboard on the embedded server's admin address, as a real process. */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { test } from 'node:test';

const bin = new URL('../../../bin/muster.js', import.meta.url).pathname;

test(
  'muster serve --ui serves the page and live snapshots of its own store',
  { timeout: 60_000 },
  async () => {
    const dir = mkdtempSync(join(tmpdir(), 'muster-serve-ui-'));
    const child = spawn(
      process.execPath,
      [bin, 'serve', '--data-dir', dir, '--listen', '127.0.0.1:0', '--ui', '--log-level', 'warn'],
      {
        stdio: ['ignore', 'pipe', 'inherit'],
      },
    );
    try {
      const url = await new Promise<string>((resolve, reject) => {
        child.once('exit', (code) => reject(new Error(`serve exited with ${code}`)));
        createInterface({ input: child.stdout }).on('line', (line) => {
          const m = /^muster serve: dashboard on (http:\/\/\S+)\/ \(read-only\)$/.exec(line);
          if (m !== null) resolve(m[1] as string);
        });
      });
      const page = await fetch(`${url}/`);
      assert.match(await page.text(), /<script type="module" src="\/ui\/app.js">/);
      const app = await fetch(`${url}/ui/app.js`);
      assert.equal(app.headers.get('content-type'), 'text/javascript; charset=utf-8');
      assert.match(await app.text(), /EventSource/);
      const state = (await (await fetch(`${url}/v1/ui/state`)).json()) as {
        writable: boolean;
        services: unknown[];
      };
      assert.equal(state.writable, false);
      assert.deepEqual(state.services, []);
    } finally {
      child.kill('SIGTERM');
      if (child.exitCode === null) await once(child, 'exit');
      rmSync(dir, { recursive: true, force: true });
    }
  },
);
