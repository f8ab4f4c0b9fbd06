import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, test } from 'node:test';
import { AGENT_V8_FLAGS, agentV8Flags } from '../../src/cli/agent-main.js';

const ALL = AGENT_V8_FLAGS.map((f) => f.flag);

describe("the agent's V8 flags (docs/agent.md, Memory)", () => {
  test('all of them when the operator gave none', { timeout: 5_000 }, () => {
    assert.deepEqual(agentV8Flags([]), ALL);
    assert.deepEqual(agentV8Flags(['', '--enable-source-maps']), ALL);
  });

  test(
    "the operator's flag of the same name wins, either way and through V8's aliases",
    { timeout: 5_000 },
    () => {
      assert.ok(!agentV8Flags(['--turbofan']).includes('--no-turbofan'));
      assert.ok(!agentV8Flags(['--opt']).includes('--no-turbofan'));
      assert.ok(!agentV8Flags(['--no-opt']).includes('--no-turbofan'));
      assert.ok(!agentV8Flags(['--sparkplug']).includes('--no-sparkplug'));
      assert.ok(!agentV8Flags(['--no_optimize_for_size']).includes('--optimize-for-size'));
      const semi = agentV8Flags(['--max-semi-space-size=8']);
      assert.ok(!semi.some((f) => f.includes('semi-space')));
      assert.equal(semi.length, ALL.length - 1);
    },
  );

  test('a node started with them runs (V8 accepts each at run time)', { timeout: 20_000 }, () => {
    const res = spawnSync(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        `import { setFlagsFromString } from 'node:v8';
         for (const f of ${JSON.stringify(ALL)}) setFlagsFromString(f);
         let s = 0; for (let i = 0; i < 1e6; i++) s += i;
         process.stdout.write(String(s));`,
      ],
      { encoding: 'utf8' },
    );
    assert.equal(res.status, 0, res.stderr);
    assert.equal(res.stdout, String((1e6 * (1e6 - 1)) / 2));
  });
});
