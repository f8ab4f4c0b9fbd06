/**
 * Independent etcd clients against `muster serve` (issue 13 §3): Debian's python3-etcd3, which logs
 * in with a user and password and then sends the `token` metadata twice on every call.
 */
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, test } from 'node:test';
import { startServer } from '../../src/server/index.js';
import { makeTestCertificates, needBinary } from '../../src/testing/index.js';

const TOKEN = 'test-token-0123456789abcdef';
/** Debian's interpreter: python3-etcd3 is installed for it, not for other pythons on PATH. */
const PYTHON = '/usr/bin/python3';

function needPythonEtcd3(): false | string {
  try {
    execFileSync(PYTHON, ['-c', 'import etcd3'], { stdio: 'ignore' });
    return false;
  } catch {
    if (process.env.MUSTER_REQUIRE_SERVICES === '1') {
      throw new Error('python3-etcd3 is missing (apt-get install python3-etcd3); MUSTER_REQUIRE_SERVICES=1');
    }
    return 'python3-etcd3 is not installed (apt-get install python3-etcd3)';
  }
}

describe(
  'python3-etcd3 against muster serve',
  { skip: needBinary('openssl', 'apt-get install openssl') || needPythonEtcd3() },
  () => {
    test(
      'user/password login (token metadata sent twice), put, get, lease, delete',
      { timeout: 60_000 },
      async () => {
        // python-etcd3 attaches its token as call credentials, which grpc only sends over TLS.
        const certs = makeTestCertificates();
        const dir = mkdtempSync(join(tmpdir(), 'muster-py-'));
        const server = await startServer({
          dataDir: dir,
          listen: '127.0.0.1:0',
          cert: certs.serverCertFile,
          key: certs.serverKeyFile,
          token: TOKEN,
        });
        try {
          const script = `
import etcd3, sys
c = etcd3.client('127.0.0.1', ${server.port}, ca_cert=sys.argv[1], user='root', password=sys.argv[2])
c.put('/py/a', 'hello')
print(c.get('/py/a')[0].decode())
lease = c.lease(30)
c.put('/py/l', 'x', lease=lease)
print(c.get('/py/l')[1].lease_id == lease.id)
print(c.delete('/py/a'))
print(c.get('/py/a')[0])
`;
          const { stdout } = await promisify(execFile)(PYTHON, ['-c', script, certs.caFile, TOKEN], {
            timeout: 30_000,
          });
          assert.deepEqual(stdout.trim().split('\n'), ['hello', 'True', 'True', 'None']);
        } finally {
          await server.close();
          rmSync(dir, { recursive: true, force: true });
          rmSync(certs.dir, { recursive: true, force: true });
        }
      },
    );
  },
);
