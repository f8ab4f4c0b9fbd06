/**
 * The `muster` command line: `bin/muster.js` calls {@link main}. The CLI is the composition root — it
 * may import every capability (through their `index.ts`/`internal.ts`); no capability imports it.
 */
export { main, buildProgram, reportError, packageVersion, EXIT } from './main.js';
