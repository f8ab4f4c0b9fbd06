/**
 * The agent's local API, on the daemon runtime's admin server (loopback, bearer token):
 *
 * | route | answer |
 * |---|---|
 * | `GET /v1/status` | the agent (under `status`, served by the runtime): instance, session margin, partitions, configs |
 * | `GET /v1/partitions` | per partition: pid, token, state, restarts, last exit, checks |
 * | `POST /v1/partitions/:p/restart` | restarts the child (counts as a restart, not a failure) |
 * | `GET /v1/config/:name[?at=ISO]` | the version in force, or 503 `MUSTER_STALE_CONFIG` |
 * | `GET /v1/config/:name/events` | server-sent events: `current`, `version`, `switch` |
 * | `PUT /v1/checks/:name/(pass\|warn\|fail)?partition=P` | a TTL check report (body: a note) |
 * | `POST /v1/reload` | `muster agent reload`: re-read the file (the daemon runtime's route, answered by the body's `reload`) |
 * | `GET /metrics` | Prometheus (served by the runtime) |
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { ConfigHandle, ConfigSwitch, ConfigVersion } from '../config/index.js';
import { invalidArgument, MusterError } from '../errors.js';
import type { HealthStatus } from '../membership/index.js';
import { onAbort } from '../util/abort.js';
import { type Agent, supervisorOf } from './agent.js';
import { startSse } from './runtime.js';

/** 15 s between SSE comments: proxies and idle timeouts keep the stream open. */
export const SSE_KEEPALIVE_MS = 15_000;
/** 64 KiB: a check note is a line of text, not a log. */
const MAX_NOTE_BYTES = 64 * 1024;

function versionJson(name: string, v: ConfigVersion): unknown {
  return {
    name,
    version: v.version,
    activateAt: new Date(v.activateAt).toISOString(),
    value: v.value,
  };
}

function handleOf(agent: Agent, name: string): ConfigHandle {
  const h = agent.configHandle(name);
  if (h === undefined) {
    throw new MusterError(
      'MUSTER_NOT_FOUND',
      `configuration '${name}' is not served by this agent; add it to 'config:' in ${agent.config.file}`,
      { details: { config: name } },
    );
  }
  return h;
}

async function body(req: IncomingMessage): Promise<string> {
  let size = 0;
  const chunks: Buffer[] = [];
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_NOTE_BYTES) throw invalidArgument(`the body exceeds ${MAX_NOTE_BYTES} bytes`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

const STATUS: Record<string, HealthStatus> = { pass: 'passing', warn: 'warning', fail: 'failing' };

/** Adds the agent's routes to the admin server. */
export function addAgentRoutes(agent: Agent): void {
  const admin = agent.ctx.admin;
  // Open event streams, ended together when the daemon stops: one listener on `stopping` for all of
  // them (a listener per stream warned MaxListenersExceeded with more than ten children listening).
  const streams = new Set<() => void>();
  onAbort(agent.ctx.stopping, () => {
    for (const end of [...streams]) end();
  });
  admin.route('GET', '/v1/partitions', () => ({ partitions: agent.rows() }));
  admin.route('POST', '/v1/partitions/:p/restart', (_req, _res, params) => {
    const s = supervisorOf(agent, params.p ?? '');
    s.restart('requested through the API');
    return { partition: s.partition, restarting: true };
  });
  admin.route('GET', '/v1/config/:name', (req, _res, params) => {
    const name = params.name ?? '';
    const h = handleOf(agent, name);
    const at = new URL(req.url ?? '/', 'http://x').searchParams.get('at');
    let t = Date.now();
    if (at !== null) {
      t = Date.parse(at);
      if (Number.isNaN(t)) throw invalidArgument(`at must be an ISO-8601 instant, got ${JSON.stringify(at)}`);
    }
    return { ...(versionJson(name, h.at(t)) as object), at: new Date(t).toISOString() };
  });
  admin.route('GET', '/v1/config/:name/events', (req, res, params) =>
    sse(agent, streams, req, res, params.name ?? ''),
  );
  admin.route('PUT', '/v1/checks/:name/:status', async (req, _res, params) => {
    const status = STATUS[params.status ?? ''];
    if (status === undefined)
      throw invalidArgument(`status must be pass, warn or fail, got '${params.status}'`);
    const url = new URL(req.url ?? '/', 'http://x');
    const partition = url.searchParams.get('partition') ?? req.headers['x-muster-partition'];
    if (typeof partition !== 'string' || partition === '') {
      throw invalidArgument('name the partition: ?partition=P (children have it in MUSTER_PARTITION)');
    }
    const s = supervisorOf(agent, partition);
    const check = s.checks?.get(params.name ?? '');
    if (check === undefined) {
      throw new MusterError(
        'MUSTER_NOT_FOUND',
        `partition '${partition}' has no running check '${params.name}' (is its child ready?)`,
        { details: { partition, check: params.name } },
      );
    }
    check.report(status, await body(req));
    return { partition, check: check.name, status: check.status };
  });
}

/**
 * Server-sent events for one configuration: `current` (the version in force, or a `stale` event),
 * then every `version` received and every `switch` at its instant. For children not written in
 * TypeScript; they still ask `GET /v1/config/:name?at=` for each task (the fail-closed rule).
 */
function sse(
  agent: Agent,
  streams: Set<() => void>,
  req: IncomingMessage,
  res: ServerResponse,
  name: string,
): void {
  const h = handleOf(agent, name);
  const send = startSse(res);
  const sendCurrent = (): void => {
    try {
      send('current', versionJson(name, h.current()));
    } catch (err) {
      const e = err instanceof MusterError ? err : new MusterError('MUSTER_INTERNAL', String(err));
      send('stale', { code: e.code, message: e.message });
    }
  };
  void h.ready().then(sendCurrent, () => undefined);
  const onVersion = (p: { version: ConfigVersion; cancelled: boolean }): void =>
    void send('version', { ...(versionJson(name, p.version) as object), cancelled: p.cancelled });
  const onSwitch = (p: ConfigSwitch<unknown>): void =>
    void send('switch', { ...(versionJson(name, p.version) as object), latenessMs: p.latenessMs });
  h.on('version', onVersion);
  h.on('switch', onSwitch);
  const keepalive = setInterval(() => res.write(': keep-alive\n\n'), SSE_KEEPALIVE_MS);
  const done = (): void => {
    clearInterval(keepalive);
    h.off('version', onVersion);
    h.off('switch', onSwitch);
    streams.delete(end);
  };
  const end = (): void => {
    done();
    res.end();
  };
  req.on('close', done);
  if (agent.ctx.stopping.aborted) end();
  else streams.add(end);
}
