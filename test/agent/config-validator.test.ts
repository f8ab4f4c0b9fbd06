import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { AGENT_CONFIG_SCHEMA } from '../../src/agent/index.js';

/** scripts/gen-agent-validator.mjs (plain JavaScript, outside the TypeScript project). */
interface Generator {
  agentValidatorSource: (schema: unknown) => string;
}
const GENERATOR = new URL('../../../scripts/gen-agent-validator.mjs', import.meta.url).href;
const CHECKED_IN = new URL('../../../src/agent/config-validator.ts', import.meta.url);

test(
  'the checked-in agent config validator is generated from the current schema',
  { timeout: 30_000 },
  async () => {
    const { agentValidatorSource } = (await import(GENERATOR)) as Generator;
    assert.equal(
      readFileSync(CHECKED_IN, 'utf8'),
      agentValidatorSource(AGENT_CONFIG_SCHEMA),
      'src/agent/config-validator.ts is out of step with src/agent/schema.ts: run `npm run build && node scripts/gen-agent-validator.mjs`',
    );
  },
);

test('the in-step check fails when the schema changes (negative)', { timeout: 30_000 }, async () => {
  const { agentValidatorSource } = (await import(GENERATOR)) as Generator;
  const changed = { ...AGENT_CONFIG_SCHEMA, required: ['service'] };
  assert.notEqual(readFileSync(CHECKED_IN, 'utf8'), agentValidatorSource(changed));
});

test('the generated validator is ASCII only (V8 keeps it as a one-byte string)', { timeout: 30_000 }, () => {
  assert.doesNotMatch(readFileSync(CHECKED_IN, 'utf8'), /[^\t\n\r -~]/);
});
