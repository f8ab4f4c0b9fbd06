/**
 * The harness of the crash-point tests of `muster serve`'s durable path (issue 13 §1;
 * crash-points.test.ts and crash-points-snapshot.test.ts, two files so that they run side by side).
 * Each test runs `muster serve` as a child process, writes acknowledged data, makes the server kill itself with SIGKILL at one exact
 * step (`MUSTER_CRASH_AT=<point>[:<nth>]`, src/server/crash-point.ts), then restarts it three times
 * with a SIGKILL after each and a clean stop at the end. After every start it checks that the
 * server starts, that every acknowledged write is there with the revision it was acknowledged at,
 * and that the member id never changes. docs/serve.md ("Crash points") maps each point to its test.
 */
import assert from 'node:assert/strict';
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';
import { call, type KvClient, type KvHeader, kvClient } from './etcd-proto.js';
import { SEGMENT_PREALLOCATE_BYTES, segmentName, segmentNumber, WAL_MAGIC } from '../../src/server/wal.js';

const bin = new URL('../../../bin/muster.js', import.meta.url).pathname;
/** Restarts after the crash, each ended by SIGKILL. */
const RESTARTS = 3;
/** Longest a server may take to start or to reach its crash point. */
const START_MS = 20_000;

const children = new Set<ChildProcessWithoutNullStreams>();
const dirs: string[] = [];
after(() => {
  for (const c of children) c.kill('SIGKILL');
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

export function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'muster-crashpt-'));
  dirs.push(d);
  return d;
}

interface Exit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}
interface Running {
  readonly child: ChildProcessWithoutNullStreams;
  readonly address: string;
  readonly exited: Promise<Exit>;
  readonly output: () => string;
}

/**
 * Starts `muster serve` on `dir`. Resolves `{ up }` once it listens, or `{ down }` when it exits
 * first (a crash point during start-up).
 */
export function startServe(
  dir: string,
  options: { crashAt?: string; snapshotRecords?: number } = {},
): Promise<{ up: Running } | { down: Exit; output: string }> {
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env.MUSTER_CRASH_AT;
  if (options.crashAt !== undefined) env.MUSTER_CRASH_AT = options.crashAt;
  const args = [bin, 'serve', '--data-dir', dir, '--listen', '127.0.0.1:0', '--log-level', 'warn'];
  if (options.snapshotRecords !== undefined) args.push('--snapshot-records', String(options.snapshotRecords));
  const child = spawn(process.execPath, args, { stdio: 'pipe', env });
  children.add(child);
  let out = '';
  const exited = new Promise<Exit>((resolve) =>
    child.once('exit', (code, signal) => {
      children.delete(child);
      resolve({ code, signal });
    }),
  );
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`muster serve neither started nor exited within ${START_MS} ms: ${out}`));
    }, START_MS);
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /listening on etcd:\/\/([\d.]+:\d+)/.exec(out);
      if (m !== null) {
        clearTimeout(timer);
        resolve({ up: { child, address: m[1] as string, exited, output: () => out } });
      }
    });
    void exited.then((down) => {
      clearTimeout(timer);
      resolve({ down, output: out });
    });
  });
}

export async function mustStart(dir: string, options: { snapshotRecords?: number } = {}): Promise<Running> {
  const r = await startServe(dir, options);
  if ('down' in r) {
    assert.fail(`muster serve did not start (exit ${r.down.code ?? r.down.signal}): ${r.output}`);
  }
  return r.up;
}

export async function kill(s: Running): Promise<void> {
  s.child.kill('SIGKILL');
  await s.exited;
}

/** What the clients were told, and the member id every answer must carry. */
export class History {
  readonly acked = new Map<string, { value: string; revision: number }>();
  memberId: string | undefined;
  #seq = 0;

  #header(h: KvHeader): void {
    this.memberId ??= h.member_id;
    assert.equal(h.member_id, this.memberId, 'the member id changed');
  }

  /** Writes `n` keys one after another; every one must be acknowledged. */
  async write(address: string, n: number): Promise<void> {
    const client = kvClient(address);
    try {
      for (let i = 0; i < n; i++) await this.#put(client);
    } finally {
      client.close();
    }
  }

  /** Writes from `writers` concurrent clients until the server dies; resolves with how it died. */
  async writeUntilDeath(s: Running, writers = 4): Promise<Exit> {
    let dead = false;
    const exit = s.exited.then((e) => {
      dead = true;
      return e;
    });
    const loop = async (): Promise<void> => {
      const client = kvClient(s.address);
      try {
        while (!dead) {
          try {
            await this.#put(client);
          } catch (err) {
            if (!dead) await Promise.race([exit, new Promise((r) => setTimeout(r, 2000))]);
            if (!dead) throw err;
          }
        }
      } finally {
        client.close();
      }
    };
    await Promise.all(Array.from({ length: writers }, loop));
    return exit;
  }

  async #put(client: KvClient): Promise<void> {
    const key = `/crash/${String(this.#seq++).padStart(6, '0')}`;
    const value = `v${key}`;
    const r = await call<{ header: KvHeader }>((cb) =>
      client.Put({ key: Buffer.from(key), value: Buffer.from(value) }, cb),
    );
    this.#header(r.header);
    this.acked.set(key, { value, revision: Number(r.header.revision) });
  }

  /** Every acknowledged write is present with its value and revision. */
  async check(address: string): Promise<void> {
    const client = kvClient(address);
    try {
      const all = await call<{
        header: KvHeader;
        kvs: { key: Buffer; value: Buffer; mod_revision: string }[];
      }>((cb) => client.Range({ key: Buffer.from('/crash/'), range_end: Buffer.from('/crash0') }, cb));
      this.#header(all.header);
      const present = new Map(all.kvs.map((kv) => [kv.key.toString(), kv]));
      for (const [key, a] of this.acked) {
        const kv = present.get(key);
        assert.ok(kv, `acknowledged write ${key} (revision ${a.revision}) is missing`);
        assert.equal(kv.value.toString(), a.value, `${key} has the wrong value`);
        assert.equal(Number(kv.mod_revision), a.revision, `${key} has the wrong revision`);
      }
    } finally {
      client.close();
    }
  }
}

function walFiles(dir: string): string[] {
  return readdirSync(dir)
    .filter((n) => segmentNumber(n) !== undefined)
    .sort();
}

interface Scenario {
  /** `MUSTER_CRASH_AT`; none: only `damage` is tested. */
  readonly crashAt?: string;
  /** Where the crash comes: on the first start of an empty directory, on a later start, or while serving. */
  readonly phase: 'first-start' | 'start' | 'running';
  /** How the set-up run ends (default SIGKILL; SIGTERM writes a snapshot). */
  readonly setupStop?: 'kill' | 'term';
  /** Changes the data directory after the set-up run (a torn tail, an older version's leftovers). */
  readonly damage?: (dir: string) => void;
  readonly snapshotRecords?: number;
}

/**
 * Set-up run (acknowledged writes), the crash, then {@link RESTARTS} restarts each checked and
 * ended by SIGKILL, and a last start that is checked and stopped cleanly (which writes a snapshot:
 * after it, no temporary file may be left).
 */
export async function crashAndRecover(s: Scenario): Promise<History> {
  const dir = tempDir();
  const h = new History();
  const opts = s.snapshotRecords === undefined ? {} : { snapshotRecords: s.snapshotRecords };
  if (s.phase !== 'first-start') {
    const setup = await mustStart(dir, opts);
    await h.write(setup.address, 20);
    if (s.setupStop === 'term') {
      setup.child.kill('SIGTERM');
      assert.equal((await setup.exited).code, 0);
    } else {
      await kill(setup);
    }
  }
  s.damage?.(dir);
  if (s.crashAt !== undefined) {
    const r = await startServe(dir, { ...opts, crashAt: s.crashAt });
    let output: string;
    let exit: Exit;
    if (s.phase === 'running') {
      assert.ok('up' in r, `the server did not start: ${'output' in r ? r.output : ''}`);
      const timer = setTimeout(() => r.up.child.kill('SIGKILL'), START_MS);
      exit = await h.writeUntilDeath(r.up);
      clearTimeout(timer);
      output = r.up.output();
    } else {
      assert.ok('down' in r, `the server started instead of crashing at ${s.crashAt}`);
      exit = r.down;
      output = r.output;
    }
    assert.equal(exit.signal, 'SIGKILL', `expected a crash at ${s.crashAt}: ${output}`);
    assert.match(output, /crash point .* reached/, `the crash was not the crash point's: ${output}`);
  }
  // The restarts take no snapshot (default interval): a snapshot would delete the segments the crash
  // left and hide what a later start makes of them.
  for (let i = 0; i < RESTARTS; i++) {
    const srv = await mustStart(dir);
    await h.check(srv.address);
    await h.write(srv.address, 10);
    await kill(srv);
  }
  const last = await mustStart(dir);
  await h.check(last.address);
  last.child.kill('SIGTERM');
  assert.equal((await last.exited).code, 0, `clean stop failed: ${last.output()}`);
  assert.deepEqual(
    readdirSync(dir).filter((n) => n.endsWith('.tmp')),
    [],
    'temporary files are left in the data directory',
  );
  return h;
}

/** The offset after the last record of a segment (where its preallocated zeros start). */
function endOfRecords(bytes: Buffer): number {
  let at = WAL_MAGIC.length;
  while (at + 8 <= bytes.length && bytes.readUInt32LE(at) > 0) at += 8 + bytes.readUInt32LE(at);
  return at;
}

function newestSegment(dir: string): number {
  const name = walFiles(dir).at(-1);
  assert.ok(name !== undefined, `no log segment in ${dir}`);
  return segmentNumber(name) as number;
}

/** Half a record after the last one in the newest segment, as a write cut short by a crash leaves. */
export function tornTail(dir: string): void {
  const file = join(dir, segmentName(newestSegment(dir)));
  const bytes = readFileSync(file);
  const torn = Buffer.alloc(18, 0xab);
  torn.writeUInt32LE(100, 0); // a length the bytes that follow do not fill
  torn.writeUInt32LE(0xdeadbeef, 4);
  torn.copy(bytes, endOfRecords(bytes));
  writeFileSync(file, bytes);
}

/** A 0-byte segment after the newest: what a crash while an older version created a segment left. */
export function blankNewest(dir: string): void {
  writeFileSync(join(dir, segmentName(newestSegment(dir) + 1)), '');
}

/**
 * What an older version made of a blank newest segment on the next start: the blank one cut to 0
 * bytes and a new segment after it (issue 13: the start after that refused the directory).
 */
export function olderVersionsLeftovers(dir: string): void {
  const n = newestSegment(dir);
  writeFileSync(join(dir, segmentName(n + 1)), '');
  const empty = Buffer.alloc(SEGMENT_PREALLOCATE_BYTES);
  WAL_MAGIC.copy(empty);
  writeFileSync(join(dir, segmentName(n + 2)), empty);
}
