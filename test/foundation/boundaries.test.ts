/**
 * The module boundaries are enforced by lint: these tests run the real rule blocks from eslint.config.js
 * on fixture sources (through the ESLint Node API) and the cycle check on fixture files, so a rule that
 * silently stops matching fails here rather than letting deep imports in.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { ESLint, type Linter } from 'eslint';
import tseslint from 'typescript-eslint';

const repo = new URL('../../../', import.meta.url).pathname;

interface ConfigModule {
  default: readonly Linter.Config[];
  boundaryBlocks: readonly Linter.Config[];
}

async function loadConfig(): Promise<ConfigModule> {
  return (await import(join(repo, 'eslint.config.js'))) as ConfigModule;
}

/** Lints `code` as if it were the file `path` (relative to the repository) with the boundary rules only. */
async function lint(path: string, code: string): Promise<string[]> {
  const { boundaryBlocks } = await loadConfig();
  const eslint = new ESLint({
    cwd: repo,
    overrideConfigFile: true,
    overrideConfig: [{ files: ['**/*.ts'], languageOptions: { parser: tseslint.parser } }, ...boundaryBlocks],
  });
  const [result] = await eslint.lintText(code, { filePath: join(repo, path) });
  return (result?.messages ?? []).map((m) => `${m.ruleId ?? 'parse'}: ${m.message}`);
}

describe('lint: module boundaries', { timeout: 60_000 }, () => {
  test('the boundary blocks are part of the config that `npm run lint` uses', async () => {
    const config = await loadConfig();
    assert.ok(config.boundaryBlocks.length > 0);
    for (const block of config.boundaryBlocks) assert.ok(config.default.includes(block));
  });

  test('a deep import into another capability fails; index.js, internal.js and shared leaves pass', async () => {
    const deep = await lint('src/partitions/fixture.ts', "import type { Store } from '../store/types.js';\n");
    assert.equal(deep.length, 1, deep.join('\n'));
    assert.match(deep[0]!, /no-restricted-imports: .*Deep import into another capability/);
    assert.equal(
      (await lint('src/proxy/fixture.ts', "export { x } from '../partitions/view.js';\n")).length,
      1,
    );
    assert.equal(
      (await lint('src/agent/fixture.ts', "import { y } from '../store/memory/memory-store.js';\n")).length,
      1,
    );
    assert.equal((await lint('src/index.ts', "export * from './config/handle.js';\n")).length, 1);
    // Two levels down: src/store/etcd/ reaching into config.
    assert.equal(
      (await lint('src/store/etcd/fixture.ts', "import { z } from '../../config/model.js';\n")).length,
      1,
    );
    const fine = [
      "import type { Store } from '../store/index.js';",
      "import { WatchQueue } from '../store/internal.js';",
      "import { MusterError } from '../errors.js';",
      "import type { Clock } from '../clock.js';",
      "import { toMillis } from '../util/duration.js';",
      "import { parseSpec } from './spec.js';",
    ].join('\n');
    assert.deepEqual(await lint('src/partitions/fixture.ts', fine), []);
    assert.deepEqual(
      await lint('src/store/etcd/fixture.ts', "import { MemoryStore } from '../memory/memory-store.js';\n"),
      [],
    );
  });

  test('only the CLI (and tests) import src/testing', async () => {
    const harness = "import { startEtcd } from '../testing/index.js';\n";
    assert.equal((await lint('src/demo/fixture.ts', harness)).length, 1);
    assert.equal((await lint('src/agent/fixture.ts', harness)).length, 1);
    assert.deepEqual(await lint('src/cli/fixture.ts', harness), []);
  });

  test('drivers stay behind the Store port: etcd3/@grpc/protobufjs nowhere in src (own gRPC clients and server), pg only in store/postgres', async () => {
    const etcd = "import { Etcd3 } from 'etcd3';\n";
    const grpc = "import { credentials } from '@grpc/grpc-js';\n";
    const pg = "import pg from 'pg';\n";
    assert.equal((await lint('src/config/fixture.ts', etcd)).length, 1);
    assert.equal((await lint('src/agent/fixture.ts', grpc)).length, 1);
    assert.equal((await lint('src/store/fixture.ts', pg)).length, 1);
    assert.equal((await lint('src/store/etcd/fixture.ts', pg)).length, 1);
    assert.equal((await lint('src/store/postgres/fixture.ts', etcd)).length, 1);
    assert.equal((await lint('src/store/etcd/fixture.ts', etcd + grpc)).length, 2);
    assert.equal((await lint('src/server/grpc/fixture.ts', grpc)).length, 1);
    assert.equal((await lint('src/server/fixture.ts', etcd)).length, 1);
    assert.equal((await lint('src/server/fixture.ts', "import protobuf from 'protobufjs';\n")).length, 1);
    assert.deepEqual(await lint('src/store/postgres/fixture.ts', pg), []);
    // Tests and benchmarks may use drivers and deep imports.
    assert.deepEqual(
      await lint('test/store/fixture.ts', etcd + "import { x } from '../../src/store/keys.js';\n"),
      [],
    );
  });
});

describe('lint: import cycles (scripts/check-cycles.mjs)', { timeout: 60_000 }, () => {
  function checkCycles(files: Record<string, string>): { status: number | null; output: string } {
    const dir = mkdtempSync(join(tmpdir(), 'muster-cycles-'));
    try {
      for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
      const r = spawnSync(process.execPath, [join(repo, 'scripts/check-cycles.mjs'), dir], {
        encoding: 'utf8',
      });
      return { status: r.status, output: r.stdout + r.stderr };
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }

  test('a runtime cycle fails and is named; a type-only cycle passes', () => {
    const cycle = checkCycles({
      'a.ts': "import { b } from './b.js';\nexport const a = () => b;\n",
      'b.ts': "import { a } from './a.js';\nexport const b = () => a;\n",
    });
    assert.equal(cycle.status, 1, cycle.output);
    assert.match(cycle.output, /a\.ts → .*b\.ts → .*a\.ts/);
    const typesOnly = checkCycles({
      'a.ts': "import type { B } from './b.js';\nexport interface A { b?: B }\n",
      'b.ts': "import { type A } from './a.js';\nexport interface B { a?: A }\n",
    });
    assert.equal(typesOnly.status, 0, typesOnly.output);
  });

  test('src/ has no runtime import cycle', () => {
    const r = spawnSync(process.execPath, [join(repo, 'scripts/check-cycles.mjs')], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stdout + r.stderr);
  });
});
