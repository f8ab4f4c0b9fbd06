/** Shared by the configuration unit tests: a manual clock, a memory store and a configuration 'demo'. */
import { ManualClock } from '../../src/clock.js';
import { initConfig } from '../../src/config/index.js';
import { isMusterError } from '../../src/errors.js';
import { MemoryStore } from '../../src/store/index.js';

/** `assert.throws` matcher for a MusterError code. */
export const code = (c: string) => (err: unknown) => isMusterError(err) && err.code === c;

/** A ManualClock, a MemoryStore on it, and configuration 'demo' created with `policy`. */
export async function setup(policy = {}) {
  const clock = new ManualClock();
  const store = new MemoryStore({ clock });
  await initConfig(store, 'demo', policy, { clock });
  return { clock, store };
}
