import { ManualClock } from '../../src/clock.js';
import { MemoryStore } from '../../src/store/index.js';
import { storeConformance } from '../../src/testing/index.js';

storeConformance('memory engine (manual clock)', async () => {
  const clock = new ManualClock();
  const store = new MemoryStore({ clock });
  return { store, advance: (ms) => clock.tick(ms, 100) };
});

storeConformance('memory engine (system clock)', async () => ({ store: new MemoryStore() }), {
  leaseSlackMs: 500,
});
