/**
 * Patroni on `muster serve` (issue 13 §3, the gateway's acceptance test): Debian's Patroni, which
 * talks to etcd only through the v3 JSON gateway, bootstraps a PostgreSQL primary with its DCS on
 * muster serve and holds the leader key under a lease; a SIGKILL of Patroni releases the key when the
 * lease expires, a restarted Patroni takes the lead again, and a graceful stop deletes the key at once.
 */
import assert from 'node:assert/strict';
import { chownSync, mkdtempSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type ProcessHandle, spawnProcess } from '../../src/process/index.js';
import { type LeaseId, openStore, type Store } from '../../src/store/index.js';
import {
  findPostgresBinDir,
  freePort,
  needBinary,
  needPostgres,
  startTempServe,
  type TempServe,
  waitFor,
  withTimeout,
} from '../../src/testing/index.js';

const skip = needBinary('patroni', 'apt-get install patroni') || needPostgres();
const NOBODY = 65534;
/** Patroni's DCS settings: the leader key's lease TTL and its loop; ttl ≥ loop_wait + 2 × retry_timeout. */
const TTL_S = 10;
const LOOP_WAIT_S = 1;
const RETRY_TIMEOUT_S = 4;

// Every wait below is bounded and reports Patroni's log, within the runner's 300 s per file.
describe('Patroni with its DCS on muster serve', { skip, timeout: 290_000 }, () => {
  let serve: TempServe;
  let store: Store;
  let dir: string;
  let config: string;
  let restPort: number;
  const log: string[] = [];
  const running = new Set<ProcessHandle>();

  before(async () => {
    serve = await startTempServe();
    store = await openStore(serve.url);
    dir = mkdtempSync(join(tmpdir(), 'muster-patroni-'));
    // Patroni starts postgres, which refuses to run as root: both run as nobody when the tests are root.
    if (process.getuid?.() === 0) chownSync(dir, NOBODY, NOBODY);
    restPort = await freePort();
    const pgPort = await freePort();
    config = join(dir, 'patroni.yml');
    writeFileSync(
      config,
      [
        'scope: muster',
        'name: node1',
        `restapi: { listen: "127.0.0.1:${restPort}", connect_address: "127.0.0.1:${restPort}" }`,
        `etcd3: { hosts: "${serve.endpoint}" }`,
        'bootstrap:',
        `  dcs: { ttl: ${TTL_S}, loop_wait: ${LOOP_WAIT_S}, retry_timeout: ${RETRY_TIMEOUT_S} }`,
        // A throw-away cluster: initdb without its fsyncs (seconds on a loaded CI disk), as the harness does.
        '  initdb: [no-sync]',
        'postgresql:',
        `  listen: "127.0.0.1:${pgPort}"`,
        `  connect_address: "127.0.0.1:${pgPort}"`,
        `  data_dir: "${join(dir, 'data')}"`,
        `  bin_dir: "${dirname(realpathSync(join(findPostgresBinDir() ?? '', 'initdb')))}"`, // Patroni wants pg_controldata too
        `  pgpass: "${join(dir, 'pgpass')}"`,
        '  authentication:',
        '    superuser: { username: postgres, password: muster }',
        '    replication: { username: replicator, password: muster }',
        `  parameters: { unix_socket_directories: "${dir}", fsync: "off" }`,
        '',
      ].join('\n'),
      { mode: 0o644 },
    );
  });

  after(async () => {
    for (const p of running) await p.kill();
    await store?.close();
    await serve?.close();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  async function startPatroni(): Promise<ProcessHandle> {
    const asNobody =
      process.getuid?.() === 0 ? ['setpriv', `--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups'] : [];
    const p = await spawnProcess({
      command: [...asNobody, 'patroni', config],
      label: 'patroni',
      cwd: dir, // nobody must be able to enter it: a CI clone under a 0700 mktemp dir is not
      grace: '20s',
      onLine: (_stream, line) => void log.push(line),
    });
    running.add(p);
    void p.exited.then(() => running.delete(p));
    return p;
  }

  async function leader(): Promise<{ value: string; lease: LeaseId } | undefined> {
    const r = await store.range({ key: '/service/muster/leader' });
    const kv = r.kvs[0];
    return kv === undefined ? undefined : { value: Buffer.from(kv.value).toString('utf8'), lease: kv.lease };
  }

  /** Rejects with the end of Patroni's log when `wait` does. */
  async function withLog<T>(wait: Promise<T>): Promise<T> {
    return wait.catch((err: unknown) => {
      throw new Error(`${(err as Error).message}; Patroni's log:\n${log.slice(-40).join('\n')}`);
    });
  }

  async function becomesLeader(what: string, timeoutMs: number): Promise<{ value: string; lease: LeaseId }> {
    await withLog(
      waitFor(async () => (await leader())?.value === 'node1', { timeoutMs, intervalMs: 100, what }),
    );
    // The REST API agrees: this node is the primary (each probe bounded: the API may accept and stall).
    await withLog(
      waitFor(
        async () =>
          (
            await fetch(`http://127.0.0.1:${restPort}/primary`, { signal: AbortSignal.timeout(2_000) }).catch(
              () => undefined,
            )
          )?.ok === true,
        { timeoutMs: 15_000, intervalMs: 100, what: 'Patroni reporting itself primary on /primary' },
      ),
    );
    return (await leader()) as { value: string; lease: LeaseId };
  }

  test('bootstraps a primary and holds the leader key under a lease', { timeout: 150_000 }, async () => {
    const patroni = await startPatroni();
    const held = await becomesLeader('Patroni bootstrapping and taking the leader key', 100_000);
    assert.notEqual(held.lease, '0', 'the leader key is attached to a lease');
    const ttl = await store.leaseTimeToLive(held.lease);
    assert.ok(ttl !== undefined, 'the leader lease exists on muster serve');
    const members = await store.range({ prefix: '/service/muster/members/' });
    assert.equal(members.kvs.length, 1, 'one member record');
    const initialize = await store.range({ key: '/service/muster/initialize' });
    assert.equal(initialize.kvs.length, 1, 'the cluster is marked initialized');

    // SIGKILL Patroni and its PostgreSQL: nobody renews the lease, so the key goes when it expires.
    await patroni.kill();
    await withLog(
      waitFor(async () => (await leader()) === undefined, {
        timeoutMs: (TTL_S + 20) * 1000,
        intervalMs: 100,
        what: 'the leader key released by lease expiry after SIGKILL',
      }),
    );
  });

  test(
    'a restarted Patroni leads again, and a graceful stop deletes the leader key',
    { timeout: 130_000 },
    async () => {
      const patroni = await startPatroni();
      await becomesLeader('the restarted Patroni taking the leader key', 80_000);
      // SIGTERM to Patroni alone (not its group): Patroni stops its PostgreSQL itself, then the key.
      process.kill(patroni.pid, 'SIGTERM');
      const exit = await withLog(
        withTimeout(patroni.exited, 30_000, 'Patroni not gone 30 s after its SIGTERM'),
      );
      assert.equal(exit.code, 0, `Patroni exited cleanly (log:\n${log.slice(-20).join('\n')})`);
      assert.equal(await leader(), undefined, 'a graceful stop deletes the leader key');
    },
  );
});
