#!/usr/bin/env node
// Fails when the runtime import graph of src/ has a cycle. Run by `npm run lint`.
//
// Reads the TypeScript sources with the compiler's own parser (no build needed) and follows every
// import or re-export that survives compilation: `import type …`, `export type … from` and imports whose
// every named binding is `type` are erased by tsc, so they cannot form a load-order cycle and are skipped.
// Reports each cycle once, as the chain of files. Usage: node scripts/check-cycles.mjs [dir] (default src).
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import ts from 'typescript';

const rootDir = resolve(new URL('..', import.meta.url).pathname);
const srcDir = resolve(rootDir, process.argv[2] ?? 'src');

function walk(dir) {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    return statSync(p).isDirectory() ? walk(p) : p.endsWith('.ts') && !p.endsWith('.d.ts') ? [p] : [];
  });
}

/** The runtime (non-type-only) relative imports of one file, as absolute .ts paths. */
function runtimeImports(file) {
  const source = ts.createSourceFile(file, readFileSync(file, 'utf8'), ts.ScriptTarget.Latest, false);
  const out = [];
  for (const st of source.statements) {
    let spec;
    if (ts.isImportDeclaration(st)) {
      const clause = st.importClause;
      if (clause?.isTypeOnly) continue;
      const named = clause?.namedBindings;
      if (
        clause &&
        !clause.name &&
        named &&
        ts.isNamedImports(named) &&
        named.elements.length > 0 &&
        named.elements.every((e) => e.isTypeOnly)
      ) {
        continue;
      }
      spec = st.moduleSpecifier;
    } else if (ts.isExportDeclaration(st) && st.moduleSpecifier) {
      if (st.isTypeOnly) continue;
      const named = st.exportClause;
      if (
        named &&
        ts.isNamedExports(named) &&
        named.elements.length > 0 &&
        named.elements.every((e) => e.isTypeOnly)
      ) {
        continue;
      }
      spec = st.moduleSpecifier;
    }
    if (!spec || !ts.isStringLiteral(spec) || !spec.text.startsWith('.')) continue;
    out.push(resolve(dirname(file), spec.text.replace(/\.js$/, '.ts')));
  }
  return out;
}

const files = walk(srcDir);
const known = new Set(files);
const graph = new Map(files.map((f) => [f, runtimeImports(f).filter((d) => known.has(d))]));

// Tarjan's strongly connected components: every component of more than one file (or a self-import) is a cycle.
let index = 0;
const idx = new Map();
const low = new Map();
const stack = [];
const onStack = new Set();
const cycles = [];
function strongConnect(v) {
  idx.set(v, index);
  low.set(v, index);
  index++;
  stack.push(v);
  onStack.add(v);
  for (const w of graph.get(v) ?? []) {
    if (!idx.has(w)) {
      strongConnect(w);
      low.set(v, Math.min(low.get(v), low.get(w)));
    } else if (onStack.has(w)) {
      low.set(v, Math.min(low.get(v), idx.get(w)));
    }
  }
  if (low.get(v) === idx.get(v)) {
    const component = [];
    let w;
    do {
      w = stack.pop();
      onStack.delete(w);
      component.push(w);
    } while (w !== v);
    if (component.length > 1 || (graph.get(v) ?? []).includes(v)) cycles.push(component);
  }
}
for (const f of files) if (!idx.has(f)) strongConnect(f);

/** One concrete loop through a component, for the message. */
function loopThrough(component) {
  const inside = new Set(component);
  const start = component[component.length - 1];
  const path = [start];
  const seen = new Set([start]);
  let at = start;
  for (;;) {
    const next = (graph.get(at) ?? []).find((d) => inside.has(d) && (d === start || !seen.has(d)));
    if (next === undefined || next === start) break;
    path.push(next);
    seen.add(next);
    at = next;
  }
  return [...path, start].map((f) => relative(rootDir, f)).join(' → ');
}

if (cycles.length > 0) {
  console.error(
    `check-cycles: ${cycles.length} import cycle(s) in ${relative(rootDir, srcDir)}/ (runtime imports):`,
  );
  for (const c of cycles) console.error(`  ${loopThrough(c)}   [${c.length} files]`);
  console.error('Break the cycle: move what both sides need into a third module that imports neither.');
  process.exit(1);
}
console.log(`check-cycles: no import cycles among ${files.length} files in ${relative(rootDir, srcDir)}/`);
