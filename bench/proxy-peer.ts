/**
 * The benchmark's node `http-proxy` peer, run as its own process:
 * `node dist/bench/proxy-peer.js PORT BACKEND_HOST:PORT`. A keep-alive agent, as the baseline's.
 */
import { createServer, Agent } from 'node:http';
import httpProxy from 'http-proxy';

const [port, backend] = process.argv.slice(2) as [string, string];
const agent = new Agent({ keepAlive: true, maxSockets: 256 });
const proxy = httpProxy.createProxyServer({ target: `http://${backend}`, agent });
proxy.on('error', (_err, _req, res) => {
  if ('writeHead' in res && !res.headersSent) res.writeHead(502);
  res.end();
});
const server = createServer((req, res) => proxy.web(req, res));
server.listen(Number(port), '127.0.0.1', () => process.stdout.write('ready\n'));
