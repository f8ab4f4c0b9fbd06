/**
 * The benchmark's node `http-proxy` peer, run as its own process:
 * `node dist/bench/proxy-peer.js PORT BACKEND_HOST:PORT [PROCESSES]`. A keep-alive agent, as the
 * baseline's. With PROCESSES > 1 it runs that many through `node:cluster` (Node's own way to use
 * every core; its primary hands connections out round-robin) and says `ready` once all listen.
 */
import cluster from 'node:cluster';
import { createServer, Agent } from 'node:http';
import httpProxy from 'http-proxy';

const [port, backend, count = '1'] = process.argv.slice(2) as [string, string, string?];
const processes = Math.max(1, Number(count));

if (cluster.isPrimary && processes > 1) {
  let ready = 0;
  // a process that dies before it listens (EADDRINUSE…) would leave the bench waiting for `ready`
  cluster.on('exit', () => {
    if (ready < processes) process.exit(1);
  });
  for (let i = 0; i < processes; i++) {
    cluster.fork().on('message', (m) => {
      if (m === 'ready' && ++ready === processes) process.stdout.write('ready\n');
    });
  }
  process.on('SIGTERM', () => {
    for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGTERM');
    process.exit(0);
  });
} else {
  const agent = new Agent({ keepAlive: true, maxSockets: 256 });
  const proxy = httpProxy.createProxyServer({ target: `http://${backend}`, agent });
  proxy.on('error', (_err, _req, res) => {
    if ('writeHead' in res && !res.headersSent) res.writeHead(502);
    res.end();
  });
  const server = createServer((req, res) => proxy.web(req, res));
  server.listen(Number(port), '127.0.0.1', () => {
    if (cluster.isWorker) process.send?.('ready');
    else process.stdout.write('ready\n');
  });
}
