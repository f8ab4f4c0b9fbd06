import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { isMusterError } from '../../src/errors.js';
import { loadAgentConfig, parseAgentConfig, type ConfigProblem } from '../../src/agent/index.js';

const FULL = `store: etcd://10.0.0.1:2379,10.0.0.2:2379
service: kafka-consumers
instance: { id: auto, weight: 1, tags: [consumer] }
session: { ttl: 3s }
partitions: { count: 16 }
run:
  command: ["node", "consume.js", "--partition", "{partition}"]
  env: { KAFKA_BROKERS: "a:9092" }
  ready: { fd: 3 }
  stop: { signal: SIGTERM, grace: 10s }
  restart: { policy: on-failure, backoff: { initial: 100ms, max: 30s, resetAfter: 60s }, budget: 5 in 60s }
  logs: { dir: /var/log/muster, maxSize: 10MiB, keep: 3 }
checks:
  - { name: alive, script: "kill -0 {pid}", interval: 10s, timeout: 2s, onFailing: restart }
  - { name: progress, ttl: 30s, onFailing: release }
  - { name: page-oncall, http: "http://127.0.0.1:9100/health", interval: 5s,
      onFailing: { exec: "./page.sh {check} {partition}" }, onPassing: { exec: "./resolve.sh {check} {partition}" } }
config: [pong]
api: { listen: 127.0.0.1:0, tokenFile: /run/muster/agent.token }
`;

function problems(text: string, file = 'agent.yaml'): ConfigProblem[] {
  try {
    parseAgentConfig(text, file);
  } catch (err) {
    assert.ok(isMusterError(err, 'MUSTER_AGENT_CONFIG'), String(err));
    return err.details.problems as ConfigProblem[];
  }
  assert.fail('expected MUSTER_AGENT_CONFIG');
}

describe('agent.yaml', () => {
  test('the example of the issue resolves with every default filled in', { timeout: 10_000 }, () => {
    const c = parseAgentConfig(FULL, '/etc/muster/agent.yaml');
    assert.equal(c.service, 'kafka-consumers');
    assert.equal(c.instance.id, undefined);
    assert.equal(c.ttlMs, 3000);
    assert.equal(c.stopMarginMs, 1000);
    assert.equal(c.partitions, 16);
    assert.deepEqual(c.run.command, ['node', 'consume.js', '--partition', '{partition}']);
    assert.deepEqual(c.run.ready, { kind: 'fd', timeoutMs: 30_000 });
    assert.equal(c.run.graceMs, 10_000);
    assert.deepEqual(c.run.budget, { count: 5, windowMs: 60_000 });
    assert.deepEqual(c.run.backoff, { initialMs: 100, maxMs: 30_000, resetAfterMs: 60_000 });
    assert.deepEqual(c.run.logs, { dir: '/var/log/muster', maxSize: 10 * 1024 * 1024, keep: 3 });
    assert.equal(c.checks.length, 3);
    assert.deepEqual(c.checks[0]?.script, ['/bin/sh', '-c', 'kill -0 {pid}']);
    assert.equal(c.checks[1]?.kind, 'ttl');
    assert.equal(c.checks[1]?.onFailing, 'release');
    assert.deepEqual(c.checks[2]?.onFailing, { exec: ['/bin/sh', '-c', './page.sh {check} {partition}'] });
    assert.deepEqual(c.config, ['pong']);
    assert.equal(c.api.tokenFile, '/run/muster/agent.token');
  });

  test('JSON works too', { timeout: 10_000 }, () => {
    const c = parseAgentConfig('{"service": "s", "run": {"command": "sleep 100"}}', 'a.json');
    assert.deepEqual(c.run.command, ['/bin/sh', '-c', 'sleep 100']);
  });

  test('malformed YAML names file, line and reason', { timeout: 10_000 }, () => {
    const p = problems('service: s\nrun:\n  command: [a, b\n  env: {}\n', 'bad.yaml');
    assert.equal(p[0]?.file, 'bad.yaml');
    assert.ok((p[0]?.line ?? 0) >= 3, JSON.stringify(p));
    assert.equal(p[0]?.field, '(syntax)');
  });

  test('an invalid field names its line, field and reason', { timeout: 10_000 }, () => {
    const text =
      'service: s\nrun:\n  command: [sleep, "1"]\n  restart:\n    policy: sometimes\n    budget: lots\n  colour: red\n';
    const p = problems(text);
    const by = new Map(p.map((x) => [x.field, x]));
    assert.equal(by.get('run.restart.policy')?.line, 5);
    assert.match(by.get('run.restart.policy')?.reason ?? '', /always.*on-failure.*never/);
    assert.equal(by.get('run.restart.budget')?.line, 6);
    assert.equal(by.get('run.colour')?.line, 7);
    assert.match(by.get('run.colour')?.reason ?? '', /unknown field 'colour'/);
  });

  test('missing required fields and bad durations are reported with positions', { timeout: 10_000 }, () => {
    const p = problems('session:\n  ttl: soon\nrun: {}\n');
    const fields = p.map((x) => x.field);
    assert.ok(fields.includes('(root)'), JSON.stringify(p)); // service missing
    assert.ok(fields.includes('session.ttl'), JSON.stringify(p));
    assert.equal(p.find((x) => x.field === 'session.ttl')?.line, 2);
    assert.ok(
      p.some((x) => x.field === 'run' && /command/.test(x.reason)),
      JSON.stringify(p),
    );
  });

  test('a check needs exactly one kind; semantic errors carry positions', { timeout: 10_000 }, () => {
    const p = problems(
      'service: s\nrun: { command: x }\nsession: { ttl: 3s, stopMargin: 2.5s }\nchecks:\n  - { name: a, ttl: 1s, http: "http://x" }\n',
    );
    assert.ok(
      p.some((x) => x.field === 'checks[0]' && x.line === 5),
      JSON.stringify(p),
    );
  });

  test(
    'muster agent refuses a bad file before starting anything: file, line, field, reason, exit 1',
    { timeout: 20_000 },
    () => {
      const dir = mkdtempSync(join(tmpdir(), 'agent-cfg-'));
      const file = join(dir, 'agent.yaml');
      writeFileSync(file, 'service: s\nrun:\n  command: [sleep, "9"]\n  stop: { grace: forever }\n');
      const r = spawnSync(
        process.execPath,
        [new URL('../../../bin/muster.js', import.meta.url).pathname, 'agent', '--config', file],
        {
          encoding: 'utf8',
        },
      );
      assert.equal(r.status, 1);
      assert.match(r.stderr, /MUSTER_AGENT_CONFIG/);
      assert.ok(r.stderr.includes(`${file}:4:`), r.stderr);
      assert.match(r.stderr, /run\.stop\.grace/);
    },
  );

  test('an unreadable file is a MUSTER_AGENT_CONFIG naming the file', { timeout: 10_000 }, () => {
    const dir = mkdtempSync(join(tmpdir(), 'agent-cfg-'));
    assert.throws(() => loadAgentConfig(join(dir, 'nope.yaml')), /nope\.yaml.*cannot be read/s);
    writeFileSync(join(dir, 'ok.yaml'), 'service: s\nrun: { command: [sleep, "9"] }\n');
    assert.equal(loadAgentConfig(join(dir, 'ok.yaml')).service, 's');
  });

  test(
    'the YAML parser is released after each parse, and left alone when it was loaded before',
    { timeout: 20_000 },
    () => {
      // A fresh process: this test process may hold `yaml` through other imports.
      const agent = new URL('../../src/agent/index.js', import.meta.url).href;
      const script = `
        import { createRequire } from 'node:module';
        const { parseAgentConfig } = await import(${JSON.stringify(agent)});
        const require = createRequire(import.meta.url);
        const held = () => Object.keys(require.cache).some((f) => f.includes('/node_modules/yaml/'));
        const text = 'service: s\\nrun: { command: [sleep, "9"] }\\n';
        const out = [];
        for (let i = 0; i < 2; i++) out.push(parseAgentConfig(text, 'a.yaml').service, held());
        require('yaml');
        out.push(parseAgentConfig(text, 'a.yaml').service, held());
        console.log(JSON.stringify(out));
      `;
      const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
      assert.equal(r.status, 0, r.stderr);
      assert.deepEqual(JSON.parse(r.stdout), ['s', false, 's', false, 's', true]);
    },
  );
});
