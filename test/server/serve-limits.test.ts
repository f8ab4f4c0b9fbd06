/**
 * Keys are bytes (issue 13 §3): non-UTF-8 keys, keys over 4 KiB and values up to etcd's 1.5 MiB
 * request limit, through a raw gRPC client, surviving a restart; larger requests refused as etcd
 * refuses them.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { Etcd3 } from 'etcd3';
import { startServer } from '../../src/server/index.js';

const MiB = 1024 * 1024;
/** A key for messages: its length and first bytes. */
const short = (k: Buffer): string => `${k.length}:${k.subarray(0, 8).toString('hex')}`;

describe('muster serve: keys are bytes, etcd request limits', () => {
  test(
    'non-UTF-8 keys, 8 KiB keys, 1.4 MiB values; 1.6 MiB refused; all survive a restart',
    { timeout: 60_000 },
    async () => {
      const dir = mkdtempSync(join(tmpdir(), 'muster-limits-'));
      try {
        let server = await startServer({ dataDir: dir, listen: '127.0.0.1:0' });
        let client = new Etcd3({ hosts: `${server.host}:${server.port}` });
        const binKey = Buffer.from([0x2f, 0x62, 0x2f, 0xff, 0xfe, 0x00, 0x80]);
        const utf8Key = Buffer.from('/b/é', 'utf8');
        const longKey = Buffer.concat([Buffer.from('/b/'), Buffer.alloc(8192, 0x61)]);
        const bigValue = Buffer.alloc(1.4 * MiB, 7);
        await client.kv.put({ key: binKey, value: Buffer.from('bin') });
        await client.kv.put({ key: utf8Key, value: Buffer.from('utf8') });
        await client.kv.put({ key: longKey, value: bigValue });
        const check = async (): Promise<void> => {
          const got = await client.kv.range({ key: Buffer.from('/b/'), range_end: Buffer.from('/b0') });
          assert.deepEqual(
            got.kvs.map((kv) => short(Buffer.from(kv.key))),
            [longKey, utf8Key, binKey].sort((a, b) => Buffer.compare(a, b)).map(short),
            'keys come back byte for byte, in byte order',
          );
          const one = await client.kv.range({ key: binKey });
          assert.equal(one.kvs[0]?.value.toString(), 'bin');
          const big = await client.kv.range({ key: longKey });
          assert.equal(big.kvs[0]?.value.length, bigValue.length);
          assert.equal(await client.get('/b/é').string(), 'utf8');
        };
        await check();
        await assert.rejects(
          client.kv.put({ key: Buffer.from('/b/x'), value: Buffer.alloc(1.6 * MiB) }),
          /request is too large/,
        );
        await assert.rejects(
          client.kv.put({ key: Buffer.from('/b/x'), value: Buffer.alloc(3 * MiB) }),
          /larger than max|RESOURCE_EXHAUSTED|Received message/i,
        );
        client.close();
        await server.close();
        server = await startServer({ dataDir: dir, listen: '127.0.0.1:0' });
        client = new Etcd3({ hosts: `${server.host}:${server.port}` });
        try {
          await check();
        } finally {
          client.close();
          await server.close();
        }
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  );
});
