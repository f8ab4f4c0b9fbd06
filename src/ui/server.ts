/**
 * The dashboard's HTTP side, mounted on a daemon's admin server: the page and its script (compiled
 * into the package at build time; nothing fetched at run time), a JSON snapshot, a server-sent-events
 * stream of snapshots, and three write actions that need a token.
 */
import { readFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { cancelConfig } from '../config/index.js';
import { readJsonBody, startSse, type AdminServer } from '../daemon/index.js';
import { invalidArgument, MusterError } from '../errors.js';
import { serviceKeys } from '../membership/index.js';
import type { Store } from '../store/index.js';
import { tokensEqual } from '../util/token.js';
import { FleetModel } from './fleet.js';
import { PAGE } from './page.js';

/** SSE comment sent this often so that proxies and the browser keep the stream open: 15 s. */
export const SSE_HEARTBEAT_MS = 15_000;

export interface UiOptions {
  readonly store: Store;
  /** Key root. Default `/muster/`. */
  readonly root?: string;
  /** Bearer token for write actions. Default: none — the dashboard is read-only and refuses every write. */
  readonly writeToken?: string;
  /**
   * Serve the read side (page, script, snapshot, events) without the admin server's token. A daemon
   * whose admin API always has a token (`muster agent`) sets it when it listens on loopback, so a
   * browser can open the page; writes keep the admin token and still need `writeToken`. Default false.
   */
  readonly openReads?: boolean;
}

export interface Ui {
  readonly model: FleetModel;
  close(): void;
}

const script = (): string => readFileSync(new URL('./web/app.js', import.meta.url), 'utf8');

/** Mounts the dashboard on `admin` (at `/`); returns the model and a `close()` that ends every stream. */
export function mountUi(admin: AdminServer, options: UiOptions): Ui {
  const model = new FleetModel(options.store, options.root === undefined ? {} : { root: options.root });
  const app = script(); // read once at start: the page never depends on the file system afterwards
  const streams = new Set<ServerResponse>();
  const root = options.root ?? '/muster/';
  const read = (path: string, handler: Parameters<AdminServer['route']>[2]): void =>
    options.openReads === true ? admin.openRoute('GET', path, handler) : admin.route('GET', path, handler);

  const send = (res: ServerResponse, type: string, body: string): void => {
    res.writeHead(200, { 'content-type': type, 'cache-control': 'no-store' });
    res.end(body);
  };
  read('/', (_req: IncomingMessage, res: ServerResponse) => send(res, 'text/html; charset=utf-8', PAGE));
  read('/ui/app.js', (_req: IncomingMessage, res: ServerResponse) =>
    send(res, 'text/javascript; charset=utf-8', app),
  );
  read('/v1/ui/state', () => ({
    ...model.snapshot(),
    writable: options.writeToken !== undefined,
  }));
  read('/v1/ui/events', (req: IncomingMessage, res: ServerResponse) => {
    const emit = startSse(res);
    streams.add(res);
    // Every (re)connection starts with a whole snapshot: that is the resync.
    emit('snapshot', { ...model.snapshot(), writable: options.writeToken !== undefined });
    const off = model.subscribe((s) =>
      emit('snapshot', { ...s, writable: options.writeToken !== undefined }),
    );
    const beat = setInterval(() => res.write(': heartbeat\n\n'), SSE_HEARTBEAT_MS);
    const done = (): void => {
      off();
      clearInterval(beat);
      streams.delete(res);
    };
    req.once('close', done);
    res.once('close', done);
  });

  const authorize = (req: IncomingMessage): void => {
    if (options.writeToken === undefined)
      throw new MusterError(
        'MUSTER_UNAUTHENTICATED',
        'this dashboard is read-only; start `muster ui` with --write-token-file to allow pins and cancellations',
      );
    const m = /^Bearer (.+)$/.exec(req.headers.authorization ?? '');
    if (m === null || !tokensEqual(m[1] as string, options.writeToken))
      throw new MusterError(
        'MUSTER_UNAUTHENTICATED',
        'write actions need the token: Authorization: Bearer <token>',
      );
  };
  const body = async (req: IncomingMessage): Promise<Record<string, unknown>> => {
    const b = await readJsonBody(req);
    if (typeof b !== 'object' || b === null) throw invalidArgument('the request body must be a JSON object');
    return b as Record<string, unknown>;
  };
  const str = (b: Record<string, unknown>, field: string): string => {
    const v = b[field];
    if (typeof v !== 'string' || v === '') throw invalidArgument(`'${field}' must be a non-empty string`);
    return v;
  };
  admin.route('POST', '/v1/ui/pin', async (req: IncomingMessage) => {
    authorize(req);
    const b = await body(req);
    const keys = serviceKeys(root, str(b, 'service'));
    const partition = str(b, 'partition');
    const instance = str(b, 'instance');
    await options.store.put(`${keys.pins}${partition}`, JSON.stringify({ instance }));
    return { pinned: { partition, instance } };
  });
  admin.route('POST', '/v1/ui/unpin', async (req: IncomingMessage) => {
    authorize(req);
    const b = await body(req);
    const keys = serviceKeys(root, str(b, 'service'));
    const partition = str(b, 'partition');
    await options.store.delete(`${keys.pins}${partition}`);
    return { unpinned: partition };
  });
  admin.route('POST', '/v1/ui/cancel', async (req: IncomingMessage) => {
    authorize(req);
    const b = await body(req);
    const version = b['version'];
    if (typeof version !== 'number' || !Number.isSafeInteger(version))
      throw invalidArgument("'version' must be a version number");
    const v = await cancelConfig(options.store, str(b, 'config'), version, { rootPrefix: root });
    return { cancelled: v.version };
  });

  return {
    model,
    close: () => {
      for (const res of streams) res.end();
      streams.clear();
      model.close();
    },
  };
}
