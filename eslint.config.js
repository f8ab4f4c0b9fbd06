// @ts-check
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

// ── Module boundaries (README "Layout"; docs/boundaries.md) ─────────────────────────────────────────
// A capability is a folder src/<cap>/. Another capability is imported only through its index.ts (public)
// or internal.ts (for siblings) — never a file inside it. Shared leaf modules anyone may import:
// src/errors.ts, src/clock.ts, src/util/*. Drivers stay behind the Store port: pg only under src/store/postgres/.
// etcd3, @grpc/* and protobufjs nowhere in src/: the etcd engine's client (node:http2) and muster serve
// (own HTTP/2) speak gRPC with muster's own protobuf codecs. Tests and benchmarks are free.
// Import cycles are checked by scripts/check-cycles.mjs (part of `npm run lint`).
const MAX_DEPTH = 4;
const DRIVERS = {
  etcd: {
    group: ['etcd3', 'etcd3/*', '@grpc/*', 'protobufjs', 'protobufjs/*'],
    message:
      "etcd3, @grpc/* and protobufjs are for tests only: the store goes through the Store port (src/store/index.js); gRPC messages through muster's own codecs (src/util/protobuf.ts, src/server/grpc/proto-codec.ts).",
  },
  pg: {
    group: ['pg', 'pg/*'],
    message: 'pg belongs under src/store/postgres/: go through the Store port (src/store/index.js).',
  },
};
/** The deep-import pattern for a file `depth` folders below src/ (0: src/index.ts). */
function deepImport(depth) {
  const up = depth === 0 ? '\\./' : `(\\.\\./){${depth}}`;
  return {
    regex: `^${up}(?!util/|\\.\\.?/)[^/]+/(?!(index|internal)\\.js$)`,
    message:
      "Deep import into another capability: import it through its index.js (public) or internal.js (for siblings) — add what you need to that capability's internal.ts.",
  };
}
/** src/testing/ (harnesses, checkers) is for tests and the CLI only; no other capability imports it. */
function testingImport(depth) {
  const up = depth === 0 ? '\\./' : `(\\.\\./){${depth}}`;
  return {
    regex: `^${up}testing/`,
    message:
      'src/testing/ is muster/testing: only tests and the CLI import it (the CLI passes harnesses in, as it does for the demo).',
  };
}
function boundaries(depth, allowed = []) {
  const drivers = Object.entries(DRIVERS)
    .filter(([name]) => !allowed.includes(name))
    .map(([, pattern]) => pattern);
  const testing = allowed.includes('testing') ? [] : [testingImport(depth)];
  return { 'no-restricted-imports': ['error', { patterns: [deepImport(depth), ...drivers, ...testing] }] };
}
const filesAt = (dir, depth) => [`${dir}/${'*/'.repeat(depth)}*.ts`];
export const boundaryBlocks = [];
for (let depth = 0; depth <= MAX_DEPTH; depth++) {
  boundaryBlocks.push({ files: filesAt('src', depth), rules: boundaries(depth) });
}
for (const zone of [
  { dir: 'src/cli', depth: 1, allow: ['testing'] },
  { dir: 'src/testing', depth: 1, allow: ['testing'] },
  { dir: 'src/store/postgres', depth: 2, allow: ['pg'] },
]) {
  for (let depth = zone.depth; depth <= MAX_DEPTH; depth++) {
    boundaryBlocks.push({
      files: filesAt(zone.dir, depth - zone.depth),
      rules: boundaries(depth, zone.allow),
    });
  }
}

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'coverage/**', 'eslint.config.js', 'scripts/**', 'bin/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': [
        'error',
        {
          allowForKnownSafeCalls: [
            {
              from: 'package',
              package: 'node:test',
              name: ['test', 'describe', 'it', 'suite', 'before', 'after'],
            },
          ],
        },
      ],
      '@typescript-eslint/no-misused-promises': ['error', { checksVoidReturn: { arguments: false } }],
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/require-await': 'off',
      '@typescript-eslint/only-throw-error': 'error',
      'no-constant-condition': ['error', { checkLoops: false }],
    },
  },
  ...boundaryBlocks,
  {
    // One AbortSignal helper (src/util/abort.ts): it checks `aborted` first and removes its listener.
    files: ['src/**/*.ts'],
    ignores: ['src/util/abort.ts'],
    rules: {
      'no-restricted-syntax': [
        'error',
        {
          selector: "CallExpression[callee.property.name='addEventListener'][arguments.0.value='abort']",
          message:
            'Listen to an AbortSignal through onAbort()/abortable() from src/util/abort.ts (it handles an already-aborted signal and removes the listener).',
        },
      ],
    },
  },
  {
    files: ['test/**', 'bench/**'],
    rules: {
      '@typescript-eslint/no-non-null-assertion': 'off',
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
    },
  },
);
