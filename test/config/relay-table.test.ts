import assert from 'node:assert/strict';
import {
  chmodSync,
  closeSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  writeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import {
  prepareTableDir,
  TABLE_HEADER_BYTES,
  TableReader,
  TableWriter,
} from '../../src/config/relay-table.js';
import { isMusterError } from '../../src/errors.js';
import type { KeyValue } from '../../src/store/index.js';

function kv(key: string, value: string, modRevision: number): KeyValue {
  return {
    key,
    value: new TextEncoder().encode(value),
    createRevision: modRevision,
    modRevision,
    version: 1,
    lease: '0',
  };
}

const text = (kvs: readonly KeyValue[]): string[] =>
  kvs.map((k) => `${k.key}=${new TextDecoder().decode(k.value)}@${k.modRevision}`);

function withTable(fn: (dir: string, writer: TableWriter, reader: TableReader) => void): void {
  const dir = mkdtempSync(join(tmpdir(), 'muster-table-'));
  const writer = new TableWriter(dir, '/p/');
  const reader = TableReader.open(writer.path);
  assert.ok(reader !== undefined);
  try {
    fn(dir, writer, reader);
  } finally {
    reader.close();
    writer.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

describe('shared table', () => {
  test('a reader sees each body and proof the writer wrote, in one read', () => {
    withTable((_dir, writer, reader) => {
      assert.equal(reader.header()?.provenMono, -Infinity, 'a new table proves nothing');
      writer.writeBody([kv('/p/a', '1', 5), kv('/p/b', '2', 7)], 7, 1000.5);
      let body = reader.body();
      assert.deepEqual(text(body?.kvs ?? []), ['/p/a=1@5', '/p/b=2@7']);
      assert.equal(body?.bodyRevision, 7);
      assert.equal(body?.bodyWrittenMono, 1000.5);
      writer.writeProof(7, 1001.25);
      assert.deepEqual(reader.header(), {
        bodyRevision: 7,
        bodyWrittenMono: 1000.5,
        proofRevision: 7,
        provenMono: 1001.25,
      });
      writer.writeBody([kv('/p/b', '2', 7)], 9, 1002); // a shorter body replaces a longer one
      body = reader.body();
      assert.deepEqual(text(body?.kvs ?? []), ['/p/b=2@7']);
      assert.equal(body?.proofRevision, 7, 'the proof stays with the revision it covered');
    });
  });

  test('a proof never claims more than the body holds', () => {
    withTable((_dir, writer, reader) => {
      writer.writeBody([kv('/p/a', '1', 3)], 3, 1);
      writer.writeProof(8, 2);
      assert.equal(reader.header()?.proofRevision, 3);
    });
  });

  test('a body larger than the first read buffer is read whole', () => {
    withTable((_dir, writer, reader) => {
      const big = Array.from({ length: 200 }, (_, i) =>
        kv(`/p/k${String(i).padStart(3, '0')}`, 'x'.repeat(100), i + 1),
      );
      writer.writeBody(big, 200, 1);
      assert.equal(reader.body()?.kvs.length, 200);
    });
  });

  test('a torn body or header is refused, never returned', () => {
    withTable((_dir, writer, reader) => {
      writer.writeBody([kv('/p/a', 'old', 3)], 3, 1);
      writer.writeProof(3, 2);
      const fd = openSync(writer.path, 'r+');
      const bytes = readFileSync(writer.path);
      // A body half overwritten by the next write, under the old header:
      const torn = Buffer.from(bytes.subarray(TABLE_HEADER_BYTES).toString().replace('b2xk', 'bmV3'));
      writeSync(fd, torn, 0, torn.length, TABLE_HEADER_BYTES);
      assert.equal(reader.body(), undefined);
      assert.ok(reader.header() !== undefined, 'the header alone is still whole');
      // A header whose proof changed without its checksum:
      const h = Buffer.alloc(8);
      h.writeDoubleLE(99, 0);
      writeSync(fd, h, 0, 8, 40);
      closeSync(fd);
      assert.equal(reader.header(), undefined);
    });
  });

  test('closing the writer marks the table unproven, and a missing table is not opened', () => {
    withTable((dir, writer, reader) => {
      writer.writeBody([kv('/p/a', '1', 3)], 3, 1);
      writer.writeProof(3, 2);
      writer.close();
      assert.equal(reader.header()?.provenMono, -Infinity);
      assert.equal(TableReader.open(join(dir, 'nothing-here')), undefined);
    });
  });

  test('a new writer for the same prefix makes a new file: readers of the old one never see its proofs', () => {
    withTable((dir, old, reader) => {
      old.writeBody([kv('/p/a', '1', 3)], 3, 1);
      old.writeProof(3, 2);
      // The old relay was killed (its writer never closed); a new one starts on the same directory.
      const next = new TableWriter(dir, '/p/');
      try {
        next.writeBody([kv('/p/a', '1', 3)], 90, 10);
        next.writeProof(90, 11);
        assert.equal(reader.header()?.provenMono, 2, 'the old reader saw the new relay');
        const fresh = TableReader.open(next.path);
        assert.equal(fresh?.header()?.provenMono, 11);
        fresh?.close();
      } finally {
        next.close();
      }
    });
  });

  test("the table directory must be private to the relay's user", () => {
    const base = mkdtempSync(join(tmpdir(), 'muster-table-'));
    try {
      const dir = join(base, 'relay.sock.tables');
      prepareTableDir(dir); // created 0700
      mkdirSync(join(base, 'open'), { mode: 0o755 });
      chmodSync(join(base, 'open'), 0o755);
      assert.throws(
        () => prepareTableDir(join(base, 'open')),
        (e) => isMusterError(e, 'MUSTER_INVALID_ARGUMENT') && /mode 0755/.test(e.message),
      );
    } finally {
      rmSync(base, { recursive: true, force: true });
    }
  });
});
