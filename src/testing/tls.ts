/**
 * Throw-away TLS material for tests: a CA, a server certificate valid for the loopback addresses the
 * etcd harness uses, and a client certificate, made with the `openssl` command.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface TestCertificates {
  readonly dir: string;
  readonly caFile: string;
  readonly serverCertFile: string;
  readonly serverKeyFile: string;
  readonly clientCertFile: string;
  readonly clientKeyFile: string;
}

/** Makes a CA and two certificates signed by it (P-256 keys, valid 2 days) in a new temporary directory. */
export function makeTestCertificates(dir = mkdtempSync(join(tmpdir(), 'muster-tls-'))): TestCertificates {
  const f = (name: string): string => join(dir, name);
  const openssl = (...args: string[]): void => {
    execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
  };
  const key = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  openssl(
    'req',
    '-x509',
    ...key,
    '-keyout',
    f('ca.key'),
    '-out',
    f('ca.pem'),
    '-days',
    '2',
    '-subj',
    '/CN=muster test CA',
  );
  const sign = (name: string, cn: string, ext: string): void => {
    writeFileSync(f(`${name}.ext`), ext);
    openssl('req', ...key, '-keyout', f(`${name}.key`), '-out', f(`${name}.csr`), '-subj', `/CN=${cn}`);
    openssl(
      'x509',
      '-req',
      '-in',
      f(`${name}.csr`),
      '-CA',
      f('ca.pem'),
      '-CAkey',
      f('ca.key'),
      '-CAcreateserial',
      '-out',
      f(`${name}.pem`),
      '-days',
      '2',
      '-extfile',
      f(`${name}.ext`),
    );
  };
  const loopback = [1, 2, 3, 4, 5].map((i) => `IP:127.0.0.${i}`).join(',');
  sign(
    'server',
    'etcd',
    `subjectAltName=${loopback},DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n`,
  );
  sign('client', 'muster', 'extendedKeyUsage=clientAuth\n');
  return {
    dir,
    caFile: f('ca.pem'),
    serverCertFile: f('server.pem'),
    serverKeyFile: f('server.key'),
    clientCertFile: f('client.pem'),
    clientKeyFile: f('client.key'),
  };
}
