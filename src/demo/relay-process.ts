/**
 * A per-host relay as its own process (what the agent will run): serves the configuration of
 * MUSTER_STORE on the socket MUSTER_RELAY, sends `'ready'` to its parent, exits when the parent goes.
 */
import { ConfigRelay } from '../config/index.js';
import { openStore } from '../store/index.js';

async function main(): Promise<void> {
  const store = await openStore(process.env.MUSTER_STORE ?? 'etcd://127.0.0.1:2379');
  const relay = await ConfigRelay.start({
    store,
    listen: process.env.MUSTER_RELAY ?? '/tmp/muster-relay.sock',
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
