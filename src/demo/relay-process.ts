/**
 * A per-host relay as its own process (what the agent will run): serves the configuration of
 * MUSTER_STORE on the socket MUSTER_RELAY, sends `'ready'` to its parent, exits when the parent goes.
 * With MUSTER_RELAY_REPORT=1 it also sends `{ t: 'table', revision, at }` after each shared-table
 * write (`at`: precise wall-clock ms), for the config benchmark.
 */
import { ConfigRelay } from '../config/index.js';
import { openStore } from '../store/index.js';
import { PreciseClock } from './precise-clock.js';

/** What the relay process reports after a shared-table write. */
export interface TableWriteReport {
  readonly t: 'table';
  readonly revision: number;
  readonly at: number;
}

async function main(): Promise<void> {
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
  const stop = async (): Promise<void> => {
    await relay.close();
    await store.close();
    process.exit(0);
  };
  process.on('disconnect', () => void stop());
  process.on('SIGTERM', () => void stop());
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
