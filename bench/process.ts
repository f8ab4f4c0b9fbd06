/**
 * `npm run bench -- process [rounds]`: the cost of the process kernel's spawn against a bare
 * `child_process.spawn`, p50/p99 over `rounds` (default 200) runs of `true`:
 * - `spawnProcess` resolved (setpriv + sh wrapper exec'd, guard and registry told, go-ahead written);
 * - `spawnProcess` → `gone` (the command ran, exited, its group and marked escapees checked, output read);
 * - bare `spawn` → `exit`.
 * The death-of-parent figures come from `npm run soak:process`.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { spawnProcess } from '../src/process/index.js';

function pct(values: number[], p: number): string {
  const sorted = [...values].sort((a, b) => a - b);
  const v = sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
  return (v ?? NaN).toFixed(2);
}

export async function run(args: string[]): Promise<void> {
  const rounds = Number(args[0] ?? 200);
  await (
    await spawnProcess({ command: ['true'] })
  ).gone; // probe setpriv, start the guard
  const resolved: number[] = [];
  const gone: number[] = [];
  const bare: number[] = [];
  for (let i = 0; i < rounds; i++) {
    let t = performance.now();
    const h = await spawnProcess({ command: ['true'] });
    resolved.push(performance.now() - t);
    await h.gone;
    gone.push(performance.now() - t);
    t = performance.now();
    const c = spawn('true', [], { stdio: 'ignore', detached: true });
    await once(c, 'exit');
    bare.push(performance.now() - t);
  }
  const line = (name: string, v: number[]): string => `${name}: p50 ${pct(v, 50)} ms, p99 ${pct(v, 99)} ms`;
  console.log(`process kernel, ${rounds} rounds of 'true'`);
  console.log(line('  spawnProcess resolved      ', resolved));
  console.log(line('  spawnProcess → gone        ', gone));
  console.log(line('  bare child_process → exit  ', bare));
}
