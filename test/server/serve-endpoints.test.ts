/**
 * Issue 13 §3: `etcdctl --endpoints http://HOST:PORT` maintenance calls (and `--cluster`, which
 * dials MemberList's `http://` URLs). etcdctl sends the whole URL as the HTTP/2 `:authority`, which
 * nghttp2 refuses; grpc-go connections pass through src/server/authority-filter.ts, which rewrites
 * it. Before the filter each of these calls failed with an HTTP/2 PROTOCOL_ERROR.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, test } from 'node:test';
import {
  huffmanDecode,
  isGoClient,
  rewriteAuthority,
  sanitizeAuthority,
} from '../../src/server/authority-filter.js';
import { startServer } from '../../src/server/index.js';
import { ETCD_INSTALL_HINT, needBinary } from '../../src/testing/index.js';

async function etcdctl(...args: string[]): Promise<string> {
  const { stdout, stderr } = await promisify(execFile)('etcdctl', args, {
    timeout: 30_000,
    env: { ...process.env, ETCDCTL_API: '3' },
  });
  return stdout + stderr;
}

describe('the :authority filter for grpc-go clients', () => {
  test('HPACK pieces: Huffman decoding (RFC 7541 C.4.1), the rewrite, the client test', () => {
    assert.equal(
      huffmanDecode(Buffer.from('f1e3c2e5f23a6ba0ab90f4ff', 'hex'))?.toString(),
      'www.example.com',
    );
    assert.equal(huffmanDecode(Buffer.from('ff', 'hex')), undefined, '8 bits of padding are invalid');
    assert.equal(sanitizeAuthority('127.0.0.1:2379'), '127.0.0.1:2379');
    assert.equal(sanitizeAuthority('http://127.0.0.1:2379'), 'http:__127.0.0.1:2379');
    // `:method: GET` (indexed), `:authority` literal with incremental indexing, then `:path: /`.
    const value = Buffer.from('http://h:1');
    const block = Buffer.concat([Buffer.from([0x82, 0x41, value.length]), value, Buffer.from([0x84])]);
    const out = rewriteAuthority(block);
    assert.deepEqual(
      out,
      Buffer.concat([Buffer.from([0x82, 0x41, 10]), Buffer.from('http:__h:1'), Buffer.from([0x84])]),
    );
    // A valid authority (Huffman-coded) is left as it is: the same Buffer comes back.
    const fine = Buffer.concat([Buffer.from([0x41, 0x8c]), Buffer.from('f1e3c2e5f23a6ba0ab90f4ff', 'hex')]);
    assert.equal(rewriteAuthority(fine), fine);
    const preface = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');
    assert.equal(isGoClient(Buffer.concat([preface, Buffer.from('000000040000000000', 'hex')])), true);
    assert.equal(
      isGoClient(Buffer.concat([preface, Buffer.from('000006040000000000000200000000', 'hex')])),
      false,
    );
    assert.equal(isGoClient(preface), undefined);
  });

  test(
    'etcdctl maintenance calls with --endpoints http://HOST:PORT and --cluster',
    { timeout: 90_000, skip: needBinary('etcdctl', ETCD_INSTALL_HINT) },
    async () => {
      const dir = mkdtempSync(join(tmpdir(), 'muster-endpoints-'));
      const server = await startServer({ dataDir: dir, listen: '127.0.0.1:0' });
      const url = `http://${server.host}:${server.port}`;
      try {
        await etcdctl('--endpoints', url, 'put', '/e/a', '1');
        assert.match(await etcdctl('--endpoints', url, 'get', '/e/a', '--print-value-only'), /^1$/m);
        assert.match(
          await etcdctl('--endpoints', url, 'endpoint', 'status'),
          new RegExp(`${url}, [0-9a-f]+, 3\\.4\\.25`),
        );
        assert.match(await etcdctl('--endpoints', url, 'endpoint', 'hashkv'), new RegExp(`${url}, \\d+`));
        assert.match(await etcdctl('--endpoints', url, 'defrag'), /Finished defragmenting etcd member/);
        assert.match(await etcdctl('--endpoints', url, 'endpoint', 'health'), /is healthy/);
        // --cluster dials the client URLs MemberList gives (etcd's `http://` form).
        assert.match(await etcdctl('--endpoints', url, 'endpoint', 'status', '--cluster'), /3\.4\.25/);
        // And the HOST:PORT form still works.
        assert.match(
          await etcdctl('--endpoints', `${server.host}:${server.port}`, 'endpoint', 'status'),
          /3\.4\.25/,
        );
      } finally {
        await server.close();
        rmSync(dir, { recursive: true, force: true });
      }
    },
  );
});
