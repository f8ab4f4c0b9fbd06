import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { isMusterError } from '../../src/errors.js';
import { extractKey, loadProxyConfig, parseKeySpec } from '../../src/proxy/index.js';

const dir = mkdtempSync(join(tmpdir(), 'muster-proxy-config-'));
function file(name: string, text: string): string {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
}

function fails(path: string, pattern: RegExp, line: number, field: string): void {
  assert.throws(
    () => loadProxyConfig(path),
    (err: unknown) => {
      assert.ok(isMusterError(err, 'MUSTER_INVALID_ARGUMENT'), String(err));
      assert.match(err.message, pattern);
      assert.ok(err.message.startsWith(`${path}:${line}: ${field}: `), err.message);
      assert.equal(err.details['line'], line);
      assert.equal(err.details['field'], field);
      return true;
    },
  );
}

test('a valid YAML file resolves every default', { timeout: 10_000 }, () => {
  const c = loadProxyConfig(
    file(
      'ok.yaml',
      'service: chat\nlisten: 127.0.0.1:8080\nkey: path:/realms/:realm\nhold:\n  timeout: 2s\n',
    ),
  );
  assert.equal(c.service, 'chat');
  assert.deepEqual(c.listen, ['127.0.0.1:8080']);
  assert.equal(c.hold.timeoutMs, 2000);
  assert.equal(c.hold.releaseRate, 100);
  assert.equal(c.hold.timeoutStatus, 504);
  assert.equal(c.key.kind, 'path');
});

test('JSON files are read the same way', { timeout: 10_000 }, () => {
  const c = loadProxyConfig(
    file('ok.json', '{\n  "service": "chat",\n  "listen": ["127.0.0.1:1"],\n  "key": "host"\n}\n'),
  );
  assert.equal(c.key.kind, 'host');
});

test('errors name the file, line, field and reason', { timeout: 10_000 }, () => {
  fails(
    file('a.yaml', 'service: chat\nlisten: 127.0.0.1:1\nkey: host\nhold:\n  timeout: soon\n'),
    /duration/,
    5,
    'hold.timeout',
  );
  fails(
    file('b.yaml', 'service: chat\nlisten: 127.0.0.1:1\nkey: host\nhold:\n  tiemout: 5s\n'),
    /not a known field/,
    5,
    'hold.tiemout',
  );
  fails(file('c.yaml', 'service: chat\nlisten: 127.0.0.1:1\n'), /is required/, 1, 'key');
  fails(file('d.yaml', 'service: chat\nlisten: 127.0.0.1:1\nkey: nose:x\n'), /invalid form/, 3, 'key');
  fails(
    file('e.yaml', 'service: chat\nlisten: 127.0.0.1:1\nkey: host\nhold:\n  releaseRate: 0\n'),
    /must be > 0/,
    5,
    'hold.releaseRate',
  );
  fails(file('f.yaml', 'service: chat\nlisten: [127.0.0.1:1\nkey: host\n'), /Flow sequence/, 3, '(syntax)');
  fails(
    file(
      'g.json',
      '{\n  "service": "chat",\n  "listen": "127.0.0.1:1",\n  "key": "host",\n  "workers": "two"\n}\n',
    ),
    /integer/,
    5,
    'workers',
  );
  fails(
    file('h.yaml', 'service: chat\nlisten: 127.0.0.1:1\nkey: "path:/a/:x/:y"\n'),
    /exactly one :param/,
    3,
    'key',
  );
});

test('key extractors', { timeout: 10_000 }, () => {
  const h = { host: 'Realm.Example.com:8080', 'x-realm': 'r1', cookie: 'a=1; realm=r%202' };
  assert.equal(extractKey(parseKeySpec('host'), '/', h), 'realm.example.com');
  assert.equal(extractKey(parseKeySpec('header:X-Realm'), '/', h), 'r1');
  assert.equal(extractKey(parseKeySpec('query:realm'), '/a?x=1&realm=r3', h), 'r3');
  assert.equal(extractKey(parseKeySpec('query:realm'), '/a?x=1', h), undefined);
  assert.equal(extractKey(parseKeySpec('cookie:realm'), '/', h), 'r 2');
  assert.equal(extractKey(parseKeySpec('path:/realms/:realm'), '/realms/r4/events?x', h), 'r4');
  assert.equal(extractKey(parseKeySpec('path:/realms/:realm'), '/other/r4', h), undefined);
  assert.equal(extractKey(parseKeySpec('header:x-none'), '/', h), undefined);
});
