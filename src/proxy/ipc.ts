/** Messages between the proxy master and its workers (over the fork IPC channel). */

/** Master → worker. A `listen` message carries the listening handle as the send handle. */
export type ToWorker =
  | { readonly type: 'listen'; readonly index: number; readonly kind: ListenerKind }
  | {
      readonly type: 'start';
      readonly configFile: string;
      readonly storeUrl: string | undefined;
      readonly generation: number;
    }
  | { readonly type: 'drain'; readonly timeoutMs: number }
  | { readonly type: 'call'; readonly id: number; readonly method: WorkerMethod; readonly arg?: string };

/** `http`: the proxy's `listen`; `lines`: the line-protocol listeners (`lines.listen`). */
export type ListenerKind = 'http' | 'lines';

/** Worker → master. */
export type FromWorker =
  | {
      readonly type: 'ready';
      readonly addresses: readonly string[];
      readonly lineAddresses: readonly string[];
    }
  | { readonly type: 'failed'; readonly error: { code?: string; message: string } }
  | { readonly type: 'result'; readonly id: number; readonly value?: unknown; readonly error?: string };

export type WorkerMethod = 'status' | 'held' | 'explain' | 'metrics';
