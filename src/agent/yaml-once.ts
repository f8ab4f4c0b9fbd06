/**
 * The `yaml` package for one parse of an agent file, released afterwards (docs/agent.md, "Memory").
 *
 * An agent parses its file at start-up and at each reload, and nothing else: keeping the parser's
 * 74 modules (290 KB of source, their functions and schema tables) resident for the agent's whole
 * life costs about 0.6 MB of live V8 heap (measured after a full collection, 100 children: 10.9 →
 * 10.3 MB). `yaml` is CommonJS, so it is loaded with `require` and its entries are removed from
 * `require.cache` (Node's documented way to let a module be loaded again) once the parse is done;
 * with no reference left, V8 collects the modules' code and objects like any other garbage. A reload
 * loads it again (tens of milliseconds, once per reload).
 *
 * Only what this function loaded is released: when `yaml` was already in `require.cache` (a process
 * that also imports it elsewhere, such as the full CLI with the proxy's configuration), it is left
 * as it is. The parse never mixes two copies: `use` sees one module instance from start to end.
 */
import { createRequire } from 'node:module';
import type * as Yaml from 'yaml';

/** Runs `use` with the `yaml` module, then lets go of it if this call loaded it. */
export function withYaml<T>(use: (yaml: typeof Yaml) => T): T {
  const require = createRequire(import.meta.url);
  const entry = require.resolve('yaml');
  const loadedHere = require.cache[entry] === undefined;
  const yaml = require('yaml') as typeof Yaml;
  try {
    return use(yaml);
  } finally {
    if (loadedHere) releasePackage(require.cache, entry);
  }
}

/** Removes from `cache` every module of the package whose entry file is `entry`. */
function releasePackage(cache: NodeJS.Require['cache'], entry: string): void {
  const marker = '/node_modules/yaml/';
  const at = entry.lastIndexOf(marker);
  if (at < 0) return;
  const root = entry.slice(0, at + marker.length);
  for (const file of Object.keys(cache)) if (file.startsWith(root)) delete cache[file];
}
