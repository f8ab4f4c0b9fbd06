/**
 * The backend child of `muster demo` (one per partition, run by `muster agent`): an HTTP server on
 * MUSTER_PORT that answers with its partition, fencing token, pid and the configuration value in
 * force (read from the agent's local API); it follows the agent's SSE stream and reports the last
 * switch it saw. Ready on fd 3 once it listens.
 */
import { writeSync } from 'node:fs';
import { createServer, request } from 'node:http';

const env = process.env;
const partition = env['MUSTER_PARTITION'] ?? '?';
const token = env['MUSTER_FENCING_TOKEN'] ?? '?';
const api = env['MUSTER_API'] ?? '';
const apiToken = env['MUSTER_API_TOKEN'] ?? '';
const configName = env['DEMO_CONFIG'] ?? 'demo';
const port = Number(env['MUSTER_PORT'] ?? env['DEMO_PORT']);

let lastSwitch: { version: number; at: number } | undefined;

function get(path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve) => {
    const req = request(
      `${api}${path}`,
      { headers: { authorization: `Bearer ${apiToken}` }, timeout: 2000 },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (err) => resolve({ status: 0, body: String(err) }));
    req.end();
  });
}

function followSwitches(): void {
  const req = request(
    `${api}/v1/config/${configName}/events`,
    { headers: { authorization: `Bearer ${apiToken}`, accept: 'text/event-stream' } },
    (res) => {
      let buf = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        buf += chunk;
        let i: number;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, i);
          buf = buf.slice(i + 2);
          const event = /^event: *(.*)$/m.exec(block)?.[1];
          const data = /^data: *(.*)$/m.exec(block)?.[1];
          if (event === 'switch' && data !== undefined) {
            try {
              const d = JSON.parse(data) as { version?: number };
              lastSwitch = { version: Number(d.version), at: Date.now() };
            } catch {
              // not JSON: ignore
            }
          }
        }
      });
      res.on('end', () => setTimeout(followSwitches, 200));
    },
  );
  req.on('error', () => setTimeout(followSwitches, 200));
  req.end();
}

const server = createServer((req, res) => {
  void get(`/v1/config/${configName}`).then(({ status, body }) => {
    let config: unknown = body;
    try {
      config = JSON.parse(body);
    } catch {
      // keep the text
    }
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(
      JSON.stringify({
        partition,
        token,
        pid: process.pid,
        path: req.url,
        configStatus: status,
        config,
        lastSwitch,
      }),
    );
  });
});
server.keepAliveTimeout = 5000;
server.listen(port, '127.0.0.1', () => {
  followSwitches();
  try {
    writeSync(3, 'ready\n');
  } catch {
    // no readiness pipe: run anyway
  }
});
process.on('SIGTERM', () => {
  server.close();
  server.closeAllConnections();
  process.exit(0);
});
