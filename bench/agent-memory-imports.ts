/**
 * Started by bench/agent-memory.ts as `node --expose-gc <the agent's V8 flags> agent-memory-imports.js`:
 * imports the agent's packages and modules in load order and prints each one's cost (RSS and heap
 * used after a full GC). Its own imports are Node's only, so the first line is a bare process.
 */
import { createRequire } from 'node:module';

const MB = 1024 * 1024;
const IMPORTS = [
  'commander',
  'pino',
  'prom-client',
  'yaml',
  // No ajv: the agent's config validator is generated at build time (scripts/gen-agent-validator.mjs)
  // and config/model.ts loads ajv on its first schema only.
  '../src/cli/agent-commands.js',
  // The etcd engine with muster's own client (node:http2, hand-written codecs): no etcd3, grpc-js,
  // protobufjs or proto-loader any more (issue 15).
  '../src/store/etcd/index.js',
];

const require = createRequire(import.meta.url);
const gc = (globalThis as { gc?: () => void }).gc ?? ((): void => undefined);
const snap = (): { rss: number; heap: number } => {
  gc();
  gc();
  const m = process.memoryUsage();
  return { rss: m.rss / MB, heap: m.heapUsed / MB };
};
const f = (n: number): string => n.toFixed(1);
let prev = snap();
const lines = [`  bare node: RSS ${f(prev.rss)} MB, heap used ${f(prev.heap)} MB`];
for (const spec of IMPORTS) {
  await import(spec.startsWith('.') ? new URL(spec, import.meta.url).href : require.resolve(spec));
  const s = snap();
  lines.push(
    `  + ${spec.replace('../src/', 'src/').padEnd(28)} RSS ${s.rss >= prev.rss ? '+' : ''}${f(s.rss - prev.rss)} MB, heap +${f(s.heap - prev.heap)} MB`,
  );
  prev = s;
}
lines.push(`  all: RSS ${f(prev.rss)} MB, heap used ${f(prev.heap)} MB`);
process.stdout.write(`${lines.join('\n')}\n`);
