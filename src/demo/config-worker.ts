/**
 * A worker process for the configuration demo, its multi-process tests and its benchmark.
 *
 * It opens a configuration handle and runs a stream of small ping/pong tasks (the seed's
 * PongHandler): each task asks the configuration *at its own start time* and reports which version it
 * used, or that it was refused. Reports go to the parent over the IPC channel:
 * - `{ t: 'ready', tables }` (tables: it reads the relay's shared table), then, every flush interval, one `{ t: 'batch', messages }` holding
 * - `{ t: 'tasks', tasks: [[startedAt, version | null, code?, newest?], …] }` (newest: the highest
 *   version number the handle held when the task asked);
 * - `{ t: 'version', version, activateAt, at }` when a version is received (for propagation);
 * - `{ t: 'switch', version, activateAt, at, latenessMs }` from the handle's `switch` event.
 * Receipts and switches are timestamped when they happen and sent with the next flush: reporting at
 * the instant would make 150 processes wake their parent just when they all compete for the CPU,
 * and the measurement would slow down what it measures.
 * The parent sends `'stop'`; the worker also exits when the parent disappears.
 *
 * Environment: MUSTER_STORE, MUSTER_CONFIG, MUSTER_WORKER, MUSTER_TASK_INTERVAL_MS (0: no tasks),
 * MUSTER_FLUSH_MS (how often task reports are sent; default 100), and
 * MUSTER_RELAY: the per-host relay's socket; when set, the worker reads through it instead of the store.
 */
import { type ConfigSource, openConfig, RelayClient } from '../config/index.js';
import { isMusterError } from '../errors.js';
import { openStore } from '../store/index.js';
import { PreciseClock } from './precise-clock.js';

/** Value shape of the demo configuration (the seed's PongHandler settings). */
export interface PongSettings {
  readonly include_mood: boolean;
  /** Simulated work per task, in ms. */
  readonly delay_ms: number;
}

/** One task: start time, version used (null: refused, with the error code), newest version held. */
export type TaskTuple = [startedAt: number, version: number | null, code?: string, newest?: number];

export type WorkerMessage =
  | { t: 'ready'; tables?: boolean }
  | { t: 'tasks'; tasks: TaskTuple[] }
  | { t: 'version'; version: number; activateAt: number; at: number; cancelled: boolean }
  | { t: 'switch'; version: number; activateAt: number; at: number; latenessMs: number }
  | { t: 'batch'; messages: WorkerMessage[] }
  | { t: 'error'; message: string };

async function main(): Promise<void> {
  const send = (m: WorkerMessage): void => {
    // The parent may be gone already: an EPIPE goes to the callback instead of crashing the worker.
    if (process.connected) process.send?.(m, undefined, {}, () => undefined);
  };
  const url = process.env.MUSTER_STORE ?? 'etcd://127.0.0.1:2379';
  const name = process.env.MUSTER_CONFIG ?? 'pingpong';
  const interval = Number(process.env.MUSTER_TASK_INTERVAL_MS ?? '20');
  const clock = new PreciseClock();
  const relay = process.env.MUSTER_RELAY;
  const store: ConfigSource & { close(): Promise<void> } =
    relay !== undefined && relay !== '' ? await RelayClient.connect(relay) : await openStore(url);
  const switchWait = Number(process.env.MUSTER_SWITCH_WAIT_MS ?? '0');
  const handle = openConfig<PongSettings>(store, name, { clock, switchWait });
  let outbox: WorkerMessage[] = [];
  handle.on('version', ({ version: v, cancelled }) =>
    outbox.push({ t: 'version', version: v.version, activateAt: v.activateAt, at: clock.now(), cancelled }),
  );
  handle.on('switch', (s) =>
    outbox.push({
      t: 'switch',
      version: s.version.version,
      activateAt: s.version.activateAt,
      at: s.version.activateAt + s.latenessMs, // the handle's own reading, not a second one
      latenessMs: s.latenessMs,
    }),
  );
  await handle.ready();
  send({ t: 'ready', tables: store instanceof RelayClient && store.tables !== undefined });

  let stopping = false;
  let pending: TaskTuple[] = [];
  let pongs = 0;
  const sendReports = (): void => {
    if (pending.length > 0) outbox.push({ t: 'tasks', tasks: pending });
    pending = [];
    if (outbox.length > 0) send({ t: 'batch', messages: outbox });
    outbox = [];
  };
  const flush = setInterval(sendReports, Number(process.env.MUSTER_FLUSH_MS ?? '100'));

  // One ping/pong task: ask the configuration at the task's own start time, then do the work.
  const task = async (): Promise<void> => {
    const startedAt = clock.now();
    let settings: PongSettings;
    let version: number;
    try {
      const v = handle.at(startedAt);
      settings = v.value;
      version = v.version;
    } catch (err) {
      pending.push([startedAt, null, isMusterError(err) ? err.code : 'ERROR']);
      return;
    }
    let newest = version;
    for (const v of handle.timeline().versions) if (v.version > newest) newest = v.version;
    pending.push([startedAt, version, undefined, newest]);
    const pong = {
      pong: ++pongs,
      ...(settings.include_mood ? { mood: pongs % 2 ? 'happy' : 'grumpy' } : {}),
    };
    if (settings.delay_ms > 0)
      await new Promise((resolve) => setTimeout(resolve, Math.min(settings.delay_ms, 50), pong));
  };

  const loop = async (): Promise<void> => {
    while (!stopping) {
      await task();
      await new Promise((resolve) => setTimeout(resolve, interval * (0.5 + Math.random())));
    }
  };
  const running = interval > 0 ? loop() : Promise.resolve();

  const stop = async (): Promise<void> => {
    if (stopping) return;
    stopping = true;
    await running;
    clearInterval(flush);
    sendReports();
    await handle.close();
    await store.close();
    process.disconnect?.();
  };
  process.on('message', (m) => {
    if (m === 'stop') void stop();
  });
  process.on('disconnect', () => void stop().finally(() => process.exit(0)));
}

main().catch((err: unknown) => {
  if (process.connected) process.send?.({ t: 'error', message: String(err) } satisfies WorkerMessage);
  process.exitCode = 1;
});
