/**
 * Crash safety of `muster serve`: concurrent writers record what was acknowledged; the server (a
 * child process, `muster serve`) is killed with SIGKILL at a random moment and restarted on the same
 * data directory, several times. The checker then requires, over the whole recorded history:
 * - every acknowledged put and txn is present with the revision it was acknowledged at;
 * - no transaction is half-applied (its two keys are both present or both absent);
 * - each writer's keys form a prefix of its sequence (at most one unacknowledged write beyond it);
 * - revisions continue after each restart from where they were.
 */
import assert from 'node:assert/strict';
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { call, kvClient } from './etcd-proto.js';

const bin = new URL('../../../bin/muster.js', import.meta.url).pathname;
const KILLS = 4;
const WRITERS = 8;
/** Longest a round writes before its kill, for slow or busy machines. */
const ROUND_CAP_MS = 6000;

const dir = mkdtempSync(join(tmpdir(), 'muster-crash-'));
const children = new Set<ChildProcessWithoutNullStreams>();
after(() => {
  for (const c of children) c.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

/** Starts `muster serve` on the data directory; resolves with its address once it listens. */
function startChild(): Promise<{ child: ChildProcessWithoutNullStreams; address: string }> {
  const child = spawn(
    process.execPath,
    [
      bin,
      'serve',
      '--data-dir',
      dir,
      '--listen',
      '127.0.0.1:0',
      '--log-level',
      'warn',
      '--snapshot-records',
      '3000',
    ],
    { stdio: 'pipe' },
  );
  children.add(child);
  child.on('exit', () => children.delete(child));
  return new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    const timer = setTimeout(() => reject(new Error(`muster serve did not start: ${out}${err}`)), 20_000);
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /listening on etcd:\/\/([\d.]+:\d+)/.exec(out);
      if (m !== null) {
        clearTimeout(timer);
        resolve({ child, address: m[1] as string });
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`muster serve exited with ${code}: ${out}${err}`));
    });
  });
}

/** What one writer was told. */
interface Acked {
  readonly key: string;
  readonly value: string;
  readonly revision: number;
}

test(
  'kill -9 at random moments loses no acknowledged write and half-applies nothing',
  { timeout: 120_000 },
  async (t) => {
    const acked: Acked[] = [];
    const txnKeys: [string, string][] = [];
    const nextSeq = Array.from({ length: WRITERS }, () => 0);
    let maxAcked = 0;
    for (let round = 0; round < KILLS; round++) {
      const { child, address } = await startChild();
      const client = kvClient(address);
      // Revisions continue from where they were.
      const probe = await call<{ header: { revision: string } }>((cb) =>
        client.Put({ key: Buffer.from(`/probe/${round}`), value: Buffer.from('p') }, cb),
      );
      assert.ok(Number(probe.header.revision) > maxAcked, `round ${round}: revision went back`);
      maxAcked = Number(probe.header.revision);
      let killed = false;
      const writer = async (w: number): Promise<void> => {
        while (!killed) {
          const seq = nextSeq[w] as number;
          nextSeq[w] = seq + 1;
          const useTxn = seq % 3 === 2;
          const a = `/crash/w${w}/${String(seq).padStart(6, '0')}`;
          const value = `${round}:${seq}`;
          try {
            if (useTxn) {
              const b = `/crash-pair/w${w}/${String(seq).padStart(6, '0')}`;
              txnKeys.push([a, b]);
              const r = await call<{ header: { revision: string }; succeeded: boolean }>((cb) =>
                client.Txn(
                  {
                    compare: [{ key: Buffer.from(a), target: 0, result: 0, version: 0 }],
                    success: [
                      { request_put: { key: Buffer.from(a), value: Buffer.from(value) } },
                      { request_put: { key: Buffer.from(b), value: Buffer.from(value) } },
                    ],
                    failure: [],
                  },
                  cb,
                ),
              );
              assert.equal(r.succeeded, true);
              acked.push({ key: a, value, revision: Number(r.header.revision) });
              acked.push({ key: b, value, revision: Number(r.header.revision) });
            } else {
              const r = await call<{ header: { revision: string } }>((cb) =>
                client.Put({ key: Buffer.from(a), value: Buffer.from(value) }, cb),
              );
              acked.push({ key: a, value, revision: Number(r.header.revision) });
            }
          } catch (err) {
            if (!killed) throw err;
            return;
          }
        }
      };
      const writers = Array.from({ length: WRITERS }, (_, w) => writer(w));
      // Kill after a random number of acknowledged writes (or a time cap on a slow machine).
      const killAt = acked.length + 300 + Math.floor(Math.random() * 900);
      const capAt = Date.now() + ROUND_CAP_MS;
      while (acked.length < killAt && Date.now() < capAt)
        await new Promise((r) => setTimeout(r, 5 + Math.random() * 20));
      killed = true;
      child.kill('SIGKILL');
      await Promise.all(writers);
      client.close();
      await new Promise((r) =>
        child.exitCode !== null || child.signalCode !== null ? r(undefined) : child.once('exit', r),
      );
      for (const a of acked) maxAcked = Math.max(maxAcked, a.revision);
    }

    // Final restart: check the whole history.
    const { child, address } = await startChild();
    const client = kvClient(address);
    try {
      const all = await call<{
        header: { revision: string };
        kvs: { key: Buffer; value: Buffer; mod_revision: string }[];
      }>((cb) => client.Range({ key: Buffer.from([0]), range_end: Buffer.from([0]) }, cb));
      t.diagnostic(`${acked.length} acknowledged writes, ${txnKeys.length} transactions, ${KILLS} kills`);
      const present = new Map(all.kvs.map((kv) => [kv.key.toString(), kv]));
      assert.ok(acked.length > 400, `only ${acked.length} writes were acknowledged`);
      for (const a of acked) {
        const kv = present.get(a.key);
        assert.ok(kv, `acknowledged write ${a.key} (revision ${a.revision}) is missing`);
        assert.equal(kv.value.toString(), a.value, `${a.key} has the wrong value`);
        assert.equal(Number(kv.mod_revision), a.revision, `${a.key} has the wrong revision`);
      }
      for (const [a, b] of txnKeys) {
        assert.equal(present.has(a), present.has(b), `transaction on ${a} and ${b} is half-applied`);
      }
      const ackedKeys = new Set(acked.map((a) => a.key));
      for (let w = 0; w < WRITERS; w++) {
        const mine = [...present.keys()].filter((k) => k.startsWith(`/crash/w${w}/`));
        const unacked = mine.filter((k) => !ackedKeys.has(k));
        // Each round can leave at most the one write that was in flight when it was killed.
        assert.ok(unacked.length <= KILLS, `writer ${w}: ${unacked.length} unacknowledged writes appeared`);
      }
      const head = Number(all.header.revision);
      assert.ok(head >= maxAcked, `head ${head} is behind the acknowledged revision ${maxAcked}`);
      const last = await call<{ header: { revision: string } }>((cb) =>
        client.Put({ key: Buffer.from('/after'), value: Buffer.from('x') }, cb),
      );
      assert.equal(Number(last.header.revision), head + 1);
    } finally {
      client.close();
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
    }
  },
);

test(
  'SIGTERM stops muster serve cleanly: exit 0, log flushed, snapshot written',
  { timeout: 60_000 },
  async () => {
    const { child, address } = await startChild();
    const client = kvClient(address);
    const r = await call<{ header: { revision: string } }>((cb) =>
      client.Put({ key: Buffer.from('/sigterm'), value: Buffer.from('kept') }, cb),
    );
    client.close();
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    child.kill('SIGTERM');
    assert.equal(await exited, 0);
    assert.match(out, /muster serve: stopped/);
    const again = await startChild();
    const c2 = kvClient(again.address);
    try {
      const got = await call<{
        header: { revision: string };
        kvs: { key: Buffer; value: Buffer; mod_revision: string }[];
      }>((cb) => c2.Range({ key: Buffer.from('/sigterm') }, cb));
      assert.equal(got.kvs[0]?.value.toString(), 'kept');
      assert.equal(got.kvs[0]?.mod_revision, r.header.revision);
    } finally {
      c2.close();
      again.child.kill('SIGTERM');
      await new Promise((res) => again.child.once('exit', res));
    }
  },
);
