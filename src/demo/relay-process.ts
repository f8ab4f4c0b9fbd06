/**
 * A per-host relay as its own process (what the agent will run): serves the configuration of
 * MUSTER_STORE on the socket MUSTER_RELAY, sends `'ready'` to its parent, stops (on the daemon
 * runtime) when the parent goes or on SIGTERM.
 * With MUSTER_RELAY_REPORT=1 it also sends `{ t: 'table', revision, at }` after each shared-table
 * write (`at`: precise wall-clock ms), for the config benchmark.
 */
import { ConfigRelay } from '../config/index.js';
import { runDaemon } from '../daemon/index.js';
import { openStore } from '../store/index.js';
import { PreciseClock } from './precise-clock.js';

/** What the relay process reports after a shared-table write. */
export interface TableWriteReport {
  readonly t: 'table';
  readonly revision: number;
  readonly at: number;
}

async function main(): Promise<void> {
  const daemon = await runDaemon(
    // No admin server, warnings only: this relay is a demo's and a benchmark's helper process.
    { name: 'relay', admin: false, logLevel: process.env.MUSTER_LOG_LEVEL ?? 'warn', stopOnDisconnect: true },
    async () => {
      const store = await openStore(process.env.MUSTER_STORE ?? 'etcd://127.0.0.1:2379');
      const precise = new PreciseClock();
      const report = process.env.MUSTER_RELAY_REPORT === '1';
      const relay = await ConfigRelay.start({
        store,
        listen: process.env.MUSTER_RELAY ?? '/tmp/muster-relay.sock',
        ...(report
          ? {
              onTableWrite: (_prefix: string, revision: number) =>
                process.send?.({ t: 'table', revision, at: precise.now() } satisfies TableWriteReport),
            }
          : {}),
      });
      process.send?.('ready');
      return {
        stop: async () => {
          try {
            await relay.close();
          } finally {
            await store.close();
          }
        },
      };
    },
  );
  // Explicitly: a natural exit may wait on handles the stop left (see bin/muster.js).
  process.exit(await daemon.done);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
