/**
 * `npm run bench -- agent-kill [--trials 200] [--partitions 7] [--ttl 3] [--hostile]`
 *
 * The soak behind issue 15's first goal: `kill -9` of an agent → every descendant gone, p99 ≤ 50 ms
 * and 0 survivors over ≥ 200 trials (`npm run bench -- agent` kills 20 agents of its fleet; this kills
 * `--trials`). Each trial starts one `muster agent` on a one-member etcd, for a service of its own
 * (so it acquires at once instead of waiting for the previous victim's lease), with `--partitions`
 * partitions (7: an agent's share of 64 among 10) and `sleep` children started as in the agent bench
 * (`sh -c` appends a stamp to a file, then `exec sleep`); waits until every child has started and
 * the agent's process tree has been still for 500 ms (its spares, made `SPARE_DELAY_MS` after the
 * last start, are then waiting too: they must die as well); then SIGKILLs the agent and polls every
 * descendant it had (from /proc) until none is alive. `--hostile`: each child forks a grandchild
 * and ignores SIGTERM (the tests' worst case; the kill is still the agent's SIGKILL).
 * Printed: SIGKILL → every descendant gone p50/p99/max, descendants per trial, survivors.
 * Exit status 1 when any descendant survived.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { startEtcd } from '../src/testing/index.js';
import { alive, descendants, num, until } from './agent.js';
import { latencySummary } from './stats.js';

const BIN = new URL('../../bin/muster.js', import.meta.url).pathname;

/** How long the agent's process tree must stay unchanged before the kill. */
const STILL_MS = 500;

export async function run(args: string[]): Promise<void> {
  const trials = num(args, 'trials', 200);
  const partitions = num(args, 'partitions', 7);
  const ttl = num(args, 'ttl', 3);
  const hostile = args.includes('--hostile');
  const root = mkdtempSync(join(tmpdir(), 'bench-agent-kill-'));
  const cluster = await startEtcd({ members: 1 });
  const child = hostile
    ? // a grandchild in the same group, SIGTERM ignored by both
      `trap '' TERM; echo x >> ${root}/starts-$MUSTER_SERVICE; sleep 100000 & sleep 100000; wait`
    : `echo x >> ${root}/starts-$MUSTER_SERVICE; exec sleep 100000`;
  process.stdout.write(
    `# agent kill soak: ${trials} trials, ${partitions} ${hostile ? 'hostile ' : ''}children each, ttl ${ttl}s\n`,
  );
  const goneMs: number[] = [];
  const counts: number[] = [];
  let survivors = 0;
  let agent: ChildProcess | undefined;
  try {
    for (let t = 0; t < trials; t++) {
      const service = `kill${t}`;
      const file = join(root, `${service}.yaml`);
      writeFileSync(
        file,
        `store: ${cluster.url}
service: ${service}
instance: { id: k${t} }
session: { ttl: ${ttl}s }
partitions: { count: ${partitions} }
stateDir: ${root}/${service}
relay: false
log: { level: warn }
run:
  command: ["/bin/sh", "-c", ${JSON.stringify(child)}]
  stop: { grace: 0ms }
`,
      );
      const a = spawn(process.execPath, [BIN, 'agent', '--config', file], {
        stdio: ['ignore', 'ignore', 'inherit'],
      });
      agent = a;
      const exited = new Promise<void>((resolve) => a.once('exit', () => resolve()));
      const startedAll = (): boolean => {
        try {
          return readFileSync(join(root, `starts-${service}`), 'latin1').length >= 2 * partitions;
        } catch {
          return false;
        }
      };
      await until(`trial ${t}: every child started`, startedAll, 30_000, 10);
      // Still: the same descendants for STILL_MS (the spares made and waiting).
      let tree = descendants(a.pid as number);
      let since = performance.now();
      await until(
        `trial ${t}: the agent's tree still`,
        () => {
          const now = descendants(a.pid as number);
          if (now.length !== tree.length || now.some((p, i) => p !== tree[i])) {
            tree = now;
            since = performance.now();
          }
          return performance.now() - since >= STILL_MS;
        },
        30_000,
        50,
      );
      counts.push(tree.length);
      const t0 = performance.now();
      a.kill('SIGKILL');
      await until('descendants gone', () => tree.every((d) => !alive(d)), 5000, 1).catch(() => undefined);
      const left = tree.filter(alive);
      if (left.length === 0) goneMs.push(performance.now() - t0);
      else {
        survivors += left.length;
        process.stdout.write(`trial ${t}: survivors ${left.join(' ')}\n`);
        for (const pid of left) process.kill(pid, 'SIGKILL');
      }
      await exited;
      agent = undefined;
      if ((t + 1) % 50 === 0) process.stdout.write(`  ${t + 1} trials: ${latencySummary(goneMs)}\n`);
      await sleep(20);
    }
  } finally {
    agent?.kill('SIGKILL');
    await cluster.close();
  }
  const min = Math.min(...counts);
  const max = Math.max(...counts);
  process.stdout.write(
    `kill -9 of an agent → every descendant gone: ${latencySummary(goneMs)} (goal p99 ≤ 50 ms); ` +
      `${min === max ? min : `${min}–${max}`} descendants per trial; survivors ${survivors} (goal 0)\n`,
  );
  if (survivors > 0) process.exitCode = 1;
}
