/**
 * Who holds which version (seed 000: "measure propagation time"): each process records, under its
 * session's lease, the newest version its handle holds and its last freshness proof — one key per
 * instance, `<root>config-holders/<name>/<instance>`. The key lives in its own prefix, not under
 * `config/<name>/`, so that the handles watching the configuration never see these writes.
 *
 * Writes are bounded: a record is rewritten only when the newest version held changes or the handle's
 * state changes (`fresh` ⇄ `stale`), so a fleet of N instances costs about N writes per version.
 * Because the key is on the session's lease, a dead instance's record disappears with its lease:
 * the set of keys is the set of live holders.
 */
import { type Clock, systemClock, type TimerHandle } from '../clock.js';
import { MusterError, throwIfAborted } from '../errors.js';
import { watchPrefix } from '../store/index.js';
import type { KeyValue, LeaseId, Store } from '../store/index.js';
import { type Duration, formatDuration, toMillis } from '../util/duration.js';
import { onAbort } from '../util/abort.js';
import type { ConfigHandle, ConfigHandleState } from './handle.js';
import { DEFAULT_ROOT_PREFIX, decodeVersion } from './model.js';

/** How often the recorder looks at the handle's state: 250 ms, well inside any maxStaleness. */
export const DEFAULT_HOLDER_CHECK_MS = 250;

/** What one instance records. */
export interface HolderRecord {
  readonly instance: string;
  /** The newest (highest) non-cancelled version the handle holds; 0 when none. */
  readonly version: number;
  /** Wall-clock instant of the handle's last proof of completeness (undefined before any). */
  readonly verifiedAt: number | undefined;
  readonly state: ConfigHandleState;
  /** Writer's wall clock when it wrote the record. */
  readonly at: number;
}

/** The prefix of a configuration's holder keys. */
export function holdersPrefix(name: string, root = DEFAULT_ROOT_PREFIX): string {
  return `${root}config-holders/${name}/`;
}

export interface RecordHoldingOptions {
  readonly store: Store;
  /** The instance id (one key per instance). */
  readonly instance: string;
  /** The session's lease: the record dies with it. */
  readonly lease: LeaseId;
  readonly clock?: Clock;
  readonly rootPrefix?: string;
  /** State check period. Default {@link DEFAULT_HOLDER_CHECK_MS}. */
  readonly checkInterval?: Duration;
  /** Stops recording (as `close()`). */
  readonly signal?: AbortSignal;
  /** A failed write (the record is retried at the next check). */
  readonly onError?: (err: unknown) => void;
}

/** A running recorder: `writes` counts store writes (for the cost measurement). */
export interface HolderRecorder {
  readonly writes: number;
  /** Resolves once the current state is written (tests and `--wait` demos). */
  flush(): Promise<void>;
  close(): Promise<void>;
}

/** Newest non-cancelled version a handle holds (0 when none). */
export function newestHeld(handle: ConfigHandle): number {
  let max = 0;
  for (const v of handle.timeline().versions)
    if (v.cancelledAt === undefined && v.version > max) max = v.version;
  return max;
}

/**
 * Records what `handle` holds under `lease`, rewriting the key only when the newest version or the
 * handle's state changes. Write failures go to `onError` and are retried at the next check.
 */
export function recordHolding(handle: ConfigHandle, options: RecordHoldingOptions): HolderRecorder {
  const clock = options.clock ?? systemClock;
  const key = `${holdersPrefix(handle.name, options.rootPrefix)}${options.instance}`;
  const checkMs = toMillis(options.checkInterval ?? DEFAULT_HOLDER_CHECK_MS, 'checkInterval');
  let written = '';
  let writes = 0;
  let closed = false;
  let timer: TimerHandle | undefined;
  let inflight: Promise<void> = Promise.resolve();

  const write = (): Promise<void> => {
    inflight = inflight.then(async () => {
      if (closed) return;
      const state = handle.state;
      if (state === 'starting' || state === 'closed') return;
      const version = newestHeld(handle);
      const sig = `${version}/${state}`;
      if (sig === written) return;
      const f = handle.freshness();
      const record: HolderRecord = {
        instance: options.instance,
        version,
        verifiedAt: f.verifiedAt,
        state,
        at: clock.now(),
      };
      try {
        await options.store.put(key, JSON.stringify(record), { lease: options.lease });
        writes++;
        written = sig;
      } catch (err) {
        options.onError?.(err);
      }
    });
    return inflight;
  };
  const tick = (): void => {
    if (closed) return;
    void write();
    timer = clock.setTimeout(tick, checkMs);
  };
  const onVersion = (): void => void write();
  handle.on('version', onVersion);
  handle.ready().then(tick, () => undefined);
  const recorder: HolderRecorder = {
    get writes() {
      return writes;
    },
    flush: () => write(),
    close: async () => {
      if (closed) return;
      closed = true;
      if (timer !== undefined) clock.clearTimeout(timer);
      handle.off('version', onVersion);
      await inflight;
    },
  };
  onAbort(options.signal, () => void recorder.close());
  return recorder;
}

/** Parses one holder key's value; undefined when malformed (a foreign or corrupt key is skipped). */
export function parseHolder(kv: KeyValue): HolderRecord | undefined {
  try {
    const r = JSON.parse(Buffer.from(kv.value).toString('utf8')) as Partial<HolderRecord>;
    if (typeof r.instance !== 'string' || typeof r.version !== 'number') return undefined;
    return r as HolderRecord;
  } catch {
    return undefined;
  }
}

/** The live holders of configuration `name` (linearizable read). */
export async function readHolders(
  store: Store,
  name: string,
  options: { rootPrefix?: string; signal?: AbortSignal } = {},
): Promise<HolderRecord[]> {
  const res = await store.range(
    { prefix: holdersPrefix(name, options.rootPrefix) },
    options.signal === undefined ? {} : { signal: options.signal },
  );
  return res.kvs.map(parseHolder).filter((r): r is HolderRecord => r !== undefined);
}

/** Per version: which live instances hold it (newest ≥ version) and which do not yet. */
export interface VersionHolding {
  readonly version: number;
  readonly holders: readonly string[];
  readonly missing: readonly string[];
}

export function holdingOf(versions: readonly number[], holders: readonly HolderRecord[]): VersionHolding[] {
  return versions.map((version) => ({
    version,
    holders: holders.filter((h) => h.version >= version).map((h) => h.instance),
    missing: holders.filter((h) => h.version < version).map((h) => h.instance),
  }));
}

/**
 * Resolves when every live holder of `name` holds `version` (its newest held ≥ `version`), watching
 * the holder keys (no polling). Rejects with `MUSTER_NOT_PROPAGATED` (details: the stragglers) when
 * `timeout` passes first, `MUSTER_ABORTED` when `signal` fires.
 */
export async function waitForHolders(
  store: Store,
  name: string,
  version: number,
  options: { timeout?: Duration; rootPrefix?: string; signal?: AbortSignal; clock?: Clock } = {},
): Promise<{ holders: readonly string[] }> {
  throwIfAborted(options.signal);
  const clock = options.clock ?? systemClock;
  const timeoutMs = toMillis(options.timeout ?? '30s', 'timeout');
  const closer = new AbortController();
  const offAbort = onAbort(options.signal, () => closer.abort());
  const view = watchPrefix(store, holdersPrefix(name, options.rootPrefix), { clock, signal: closer.signal });
  const held = new Map<string, HolderRecord>();
  let timedOut = false;
  const timer = clock.setTimeout(() => {
    timedOut = true;
    closer.abort();
  }, timeoutMs);
  const done = (): boolean => [...held.values()].every((h) => h.version >= version);
  try {
    for await (const change of view) {
      if (change.type === 'reset') {
        held.clear();
        for (const kv of change.kvs) {
          const r = parseHolder(kv);
          if (r !== undefined) held.set(kv.key, r);
        }
      } else if (change.type === 'events') {
        for (const e of change.events) {
          if (e.type === 'delete') held.delete(e.kv.key);
          else {
            const r = parseHolder(e.kv);
            if (r !== undefined) held.set(e.kv.key, r);
          }
        }
      }
      if (done()) return { holders: [...held.values()].map((h) => h.instance).sort() };
    }
  } catch (err) {
    if (!timedOut) throw err;
  } finally {
    clock.clearTimeout(timer);
    offAbort();
    closer.abort();
    view.close();
  }
  throwIfAborted(options.signal);
  const stragglers = [...held.values()].filter((h) => h.version < version);
  throw new MusterError(
    'MUSTER_NOT_PROPAGATED',
    `configuration '${name}' version ${version} is not yet held by ${stragglers.length} of ${held.size} live ` +
      `instance(s) after ${formatDuration(timeoutMs)}: ${stragglers
        .map((s) => `${s.instance} (has ${s.version})`)
        .join(', ')}`,
    {
      details: {
        config: name,
        version,
        stragglers: stragglers.map((s) => ({ instance: s.instance, version: s.version })),
      },
    },
  );
}

/** A relay's recorder: pass `onPrefixUpdate` to `ConfigRelay.start`. */
export interface RelayHolderRecorder {
  readonly onPrefixUpdate: (
    prefix: string,
    kvs: ReadonlyMap<string, KeyValue>,
    changed: boolean,
    verifiedMono: number,
  ) => void;
  readonly writes: number;
  /** Resolves once every pending write is done. */
  flush(): Promise<void>;
  close(): Promise<void>;
}

/**
 * For the processes behind a per-host relay: the relay records, per configuration it relays, one
 * holder key for its host (`instance`, e.g. `host/relay`) under its own session's lease. Its processes
 * read the relay's shared table, so each of them holds a version the moment the relay has it; the
 * relay's record stands for all of them (`clients` is not counted: one key per host keeps the cost
 * at one write per version per host). Rewritten only when the newest version or `fresh`/`stale` changes.
 */
export function relayHolding(options: {
  readonly store: Store;
  readonly lease: LeaseId;
  readonly instance: string;
  readonly maxStaleness: Duration;
  readonly clock?: Clock;
  readonly rootPrefix?: string;
  readonly checkInterval?: Duration;
  readonly onError?: (err: unknown) => void;
}): RelayHolderRecorder {
  const clock = options.clock ?? systemClock;
  const root = options.rootPrefix ?? DEFAULT_ROOT_PREFIX;
  const configs = `${root}config/`;
  const stalenessMs = toMillis(options.maxStaleness, 'maxStaleness');
  const checkMs = toMillis(options.checkInterval ?? DEFAULT_HOLDER_CHECK_MS, 'checkInterval');
  const known = new Map<string, { version: number; verifiedMono: number; written: string }>();
  let writes = 0;
  let closed = false;
  let inflight: Promise<void> = Promise.resolve();

  const record = (name: string): void => {
    const k = known.get(name);
    if (k === undefined || k.verifiedMono === -Infinity || closed) return;
    const age = clock.monotonic() - k.verifiedMono;
    const state: ConfigHandleState = age <= stalenessMs ? 'fresh' : 'stale';
    const sig = `${k.version}/${state}`;
    if (sig === k.written) return;
    k.written = sig;
    const body: HolderRecord = {
      instance: options.instance,
      version: k.version,
      verifiedAt: clock.now() - age,
      state,
      at: clock.now(),
    };
    inflight = inflight.then(async () => {
      try {
        await options.store.put(`${holdersPrefix(name, root)}${options.instance}`, JSON.stringify(body), {
          lease: options.lease,
        });
        writes++;
      } catch (err) {
        k.written = ''; // retried at the next check
        options.onError?.(err);
      }
    });
  };
  const timer = setInterval(() => {
    for (const name of known.keys()) record(name);
  }, checkMs);
  timer.unref();

  return {
    onPrefixUpdate: (prefix, kvs, changed, verifiedMono) => {
      if (!prefix.startsWith(configs)) return;
      const name = prefix.slice(configs.length).replace(/\/$/, '');
      let k = known.get(name);
      if (k === undefined) {
        k = { version: 0, verifiedMono, written: '' };
        known.set(name, k);
        changed = true;
      }
      k.verifiedMono = verifiedMono;
      if (changed) {
        let max = 0;
        const versions = `${prefix}versions/`;
        for (const kv of kvs.values()) {
          if (!kv.key.startsWith(versions)) continue;
          try {
            const v = decodeVersion(kv.value, kv.key);
            if (v.cancelledAt === undefined && v.version > max) max = v.version;
          } catch {
            // a malformed version is not held
          }
        }
        k.version = max;
      }
      record(name);
    },
    get writes() {
      return writes;
    },
    flush: () => inflight,
    close: async () => {
      if (closed) return;
      closed = true;
      clearInterval(timer);
      await inflight;
    },
  };
}
