/**
 * Issue 13 §3: `etcdctl --endpoints http://HOST:PORT` maintenance calls (and `--cluster`, which
 * dials MemberList's `http://` URLs). etcdctl sends the whole URL as the HTTP/2 `:authority`, which
 * nghttp2 (under `node:http2`) refused with PROTOCOL_ERROR; muster serve's own HTTP/2
 * (src/server/grpc/h2.ts) does not look at the authority. Also the HPACK decoder on RFC 7541's
 * examples.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, test } from 'node:test';
import { HpackDecoder, huffmanDecode } from '../../src/server/grpc/hpack.js';
import { startServer } from '../../src/server/index.js';
import { ETCD_INSTALL_HINT, needBinary } from '../../src/testing/index.js';

async function etcdctl(...args: string[]): Promise<string> {
  const { stdout, stderr } = await promisify(execFile)('etcdctl', args, {
    timeout: 30_000,
    env: { ...process.env, ETCDCTL_API: '3' },
  });
  return stdout + stderr;
}

describe('HPACK decoding, and etcdctl with --endpoints http://', () => {
  test('HPACK: Huffman strings (RFC 7541 C.4.1), requests with the dynamic table (C.3, C.4)', () => {
    assert.equal(
      huffmanDecode(Buffer.from('f1e3c2e5f23a6ba0ab90f4ff', 'hex'))?.toString(),
      'www.example.com',
    );
    assert.equal(huffmanDecode(Buffer.from('ff', 'hex')), undefined, '8 bits of padding are invalid');
    const plain = new HpackDecoder();
    assert.deepEqual(plain.decode(Buffer.from('828684410f7777772e6578616d706c652e636f6d', 'hex')), {
      ':method': 'GET',
      ':scheme': 'http',
      ':path': '/',
      ':authority': 'www.example.com',
    });
    // The authority now comes from the dynamic table (index 62).
    assert.deepEqual(plain.decode(Buffer.from('828684be58086e6f2d6361636865', 'hex')), {
      ':method': 'GET',
      ':scheme': 'http',
      ':path': '/',
      ':authority': 'www.example.com',
      'cache-control': 'no-cache',
    });
    const huffman = new HpackDecoder();
    assert.deepEqual(huffman.decode(Buffer.from('828684418cf1e3c2e5f23a6ba0ab90f4ff', 'hex')), {
      ':method': 'GET',
      ':scheme': 'http',
      ':path': '/',
      ':authority': 'www.example.com',
    });
    assert.throws(() => huffman.decode(Buffer.from('c8', 'hex')), /out of range/);
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
