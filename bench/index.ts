/**
 * `npm run bench -- NAME [args…]`: runs one benchmark and prints its figures.
 * Each benchmark module exports `run(args)`.
 */
const BENCHMARKS: Record<string, () => Promise<{ run(args: string[]): Promise<void> }>> = {
  store: () => import('./store.js'),
  failover: () => import('./failover.js'),
  'partitions-scale': () => import('./partitions-scale.js'),
  membership: () => import('./membership.js'),
  etcd: () => import('./etcd.js'),
  placement: () => import('./placement.js'),
  serve: () => import('./serve.js'),
  config: () => import('./config.js'),
  'config-floor': () => import('./config-floor.js'),
  postgres: () => import('./postgres.js'),
  proxy: () => import('./proxy.js'),
  'proxy-cpu': () => import('./proxy-cpu.js'),
  'proxy-stalls': () => import('./proxy-stalls.js'),
  agent: () => import('./agent.js'),
  'agent-memory': () => import('./agent-memory.js'),
  'agent-handoff': () => import('./agent-handoff.js'),
  'agent-kill': () => import('./agent-kill.js'),
  process: () => import('./process.js'),
  bus: () => import('./bus.js'),
  'bus-cost': () => import('./bus-cost.js'),
  'bus-tail': () => import('./bus-tail.js'),
};

async function main(): Promise<void> {
  const [name, ...args] = process.argv.slice(2);
  const load = name === undefined ? undefined : BENCHMARKS[name];
  if (load === undefined) {
    console.error(
      `usage: npm run bench -- NAME [args]\nbenchmarks: ${Object.keys(BENCHMARKS).sort().join(', ')}`,
    );
    process.exitCode = 2;
    return;
  }
  const mod = await load();
  await mod.run(args);
}

await main();
