/**
 * Soak of the death-of-parent guarantee: N times (default 200), a parent with 20 children (some fork
 * grandchildren, some ignore SIGTERM) is SIGKILLed; prints p50/p99/max of SIGKILL → every descendant
 * dead, and the survivors (must be 0; exit status 1 otherwise). Then the same with the guard alone
 * (no setpriv), and with grandchildren that leave their group (setsid), unless --with-setpriv-only.
 *
 *   npm run soak:process                 # 200 rounds each
 *   npm run soak:process -- 1000         # 1000 rounds each
 */
import { parentKill, percentile } from './parent-kill.js';

const rounds = Number(process.argv[2] ?? process.env.MUSTER_SOAK_ROUNDS ?? 200);
const modes = process.argv.includes('--with-setpriv-only')
  ? [{ name: 'setpriv + guard', noSetpriv: false }]
  : [
      { name: 'setpriv + guard', noSetpriv: false },
      { name: 'guard alone', noSetpriv: true },
      { name: 'setpriv + guard, with setsid escapees', noSetpriv: false, escapees: true },
    ];

let failed = false;
for (const mode of modes) {
  const ms: number[] = [];
  let survivors = 0;
  let descendants = 0;
  const t0 = Date.now();
  for (let i = 0; i < rounds; i++) {
    const r = await parentKill({ noSetpriv: mode.noSetpriv, escapees: mode.escapees === true });
    descendants += r.pids.length;
    if (r.survivors.length > 0) {
      survivors += r.survivors.length;
      process.stdout.write(`round ${i}: survivors ${r.survivors.join(' ')}\n`);
      for (const pid of r.survivors) process.kill(pid, 'SIGKILL');
    } else ms.push(r.ms);
  }
  const f = (x: number): string => x.toFixed(1);
  process.stdout.write(
    `${mode.name}: ${rounds} rounds, ${descendants} descendants, SIGKILL → all gone ms p50 ${f(percentile(ms, 50))} ` +
      `p99 ${f(percentile(ms, 99))} max ${f(Math.max(...ms))}; survivors ${survivors} (${((Date.now() - t0) / 1000).toFixed(0)} s)\n`,
  );
  if (survivors > 0) failed = true;
}
process.exit(failed ? 1 : 0);
