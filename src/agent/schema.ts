/**
 * The JSON Schema of `agent.yaml` (draft 2020-12 subset that ajv checks). It ships inside the package
 * as this constant; `muster agent schema` prints it for editors and CI.
 */

const durationDef = {
  description: "milliseconds, or a string such as '250ms', '3s', '1m30s'",
  anyOf: [
    { type: 'number', minimum: 0 },
    { type: 'string', pattern: '^\\s*(\\d+(\\.\\d+)?(ms|s|m|h|d)?)+\\s*$' },
  ],
};

const sizeDef = {
  description: "bytes, or a string such as '512KiB', '10MiB', '1GiB'",
  anyOf: [
    { type: 'integer', minimum: 1 },
    { type: 'string', pattern: '^\\s*\\d+(\\.\\d+)?\\s*(B|KB|KiB|MB|MiB|GB|GiB)?\\s*$' },
  ],
};

const commandDef = {
  description: 'an argv array (no shell) or a shell line run by /bin/sh -c',
  anyOf: [
    { type: 'string', minLength: 1 },
    { type: 'array', minItems: 1, items: { type: 'string' } },
  ],
};

/** Shared definitions are referenced, not copied: ajv's generated validator checks each once (src/agent/config-validator.ts). */
const duration = { $ref: '#/$defs/duration' };
const size = { $ref: '#/$defs/size' };
const command = { $ref: '#/$defs/command' };

const signal = { type: 'string', pattern: '^SIG[A-Z0-9]+$' };

const exec = {
  type: 'object',
  required: ['exec'],
  additionalProperties: false,
  properties: { exec: command },
};

const action = { anyOf: [{ enum: ['restart', 'release', 'none'] }, exec] };

const check = {
  type: 'object',
  required: ['name'],
  additionalProperties: false,
  properties: {
    name: { type: 'string', minLength: 1, maxLength: 128, pattern: '^[A-Za-z0-9._-]+$' },
    script: command,
    http: { type: 'string', minLength: 1 },
    ttl: duration,
    interval: duration,
    timeout: duration,
    thresholds: {
      type: 'object',
      additionalProperties: false,
      properties: {
        passing: { type: 'integer', minimum: 1 },
        warning: { type: 'integer', minimum: 1 },
        failing: { type: 'integer', minimum: 1 },
      },
    },
    initialStatus: { enum: ['passing', 'warning', 'failing'] },
    onFailing: action,
    onWarning: action,
    onPassing: action,
  },
  oneOf: [{ required: ['script'] }, { required: ['http'] }, { required: ['ttl'] }],
};

/** The schema every agent file is validated against. */
export const AGENT_CONFIG_SCHEMA = {
  $id: 'https://muster.dev/schemas/agent.json',
  title: 'muster agent configuration',
  $defs: { duration: durationDef, size: sizeDef, command: commandDef },
  type: 'object',
  required: ['service', 'run'],
  additionalProperties: false,
  properties: {
    store: { type: 'string', minLength: 1 },
    root: { type: 'string', minLength: 1 },
    service: { type: 'string', pattern: '^[A-Za-z0-9._-]{1,63}$' },
    instance: {
      type: 'object',
      additionalProperties: false,
      properties: {
        id: { type: 'string', pattern: '^[A-Za-z0-9._-]{1,128}$' },
        weight: { type: 'number', minimum: 0 },
        tags: { type: 'array', maxItems: 64, items: { type: 'string', minLength: 1, maxLength: 256 } },
      },
    },
    session: {
      type: 'object',
      additionalProperties: false,
      properties: { ttl: duration, stopMargin: duration },
    },
    partitions: {
      type: 'object',
      additionalProperties: false,
      properties: {
        count: { type: 'integer', minimum: 0, maximum: 10_000_000 },
        names: {
          type: 'array',
          items: { type: 'string', pattern: '^[A-Za-z0-9._-]{1,128}$' },
          uniqueItems: true,
        },
        maxConcurrentMoves: { type: 'integer', minimum: 1 },
      },
      not: { required: ['count', 'names'] },
    },
    run: {
      type: 'object',
      required: ['command'],
      additionalProperties: false,
      properties: {
        command,
        cwd: { type: 'string', minLength: 1 },
        env: { type: 'object', additionalProperties: { type: ['string', 'number', 'boolean'] } },
        ready: {
          anyOf: [
            { enum: ['none'] },
            {
              type: 'object',
              additionalProperties: false,
              required: ['fd'],
              properties: { fd: { const: 3 }, timeout: duration },
            },
            {
              type: 'object',
              additionalProperties: false,
              required: ['http'],
              properties: { http: { type: 'string', minLength: 1 }, interval: duration, timeout: duration },
            },
          ],
        },
        stop: {
          type: 'object',
          additionalProperties: false,
          properties: { signal, grace: duration },
        },
        restart: {
          type: 'object',
          additionalProperties: false,
          properties: {
            policy: { enum: ['always', 'on-failure', 'never'] },
            backoff: {
              type: 'object',
              additionalProperties: false,
              properties: { initial: duration, max: duration, resetAfter: duration },
            },
            budget: {
              description: "'N in DURATION', e.g. '5 in 60s'",
              type: 'string',
              pattern: '^\\s*\\d+\\s+in\\s+\\S+\\s*$',
            },
          },
        },
        logs: {
          type: 'object',
          additionalProperties: false,
          required: ['dir'],
          properties: {
            dir: { type: 'string', minLength: 1 },
            maxSize: size,
            keep: { type: 'integer', minimum: 0 },
          },
        },
      },
    },
    checks: { type: 'array', items: check },
    overrides: {
      type: 'object',
      propertyNames: { pattern: '^[A-Za-z0-9._-]{1,128}$' },
      additionalProperties: {
        type: 'object',
        additionalProperties: false,
        properties: {
          env: { type: 'object', additionalProperties: { type: ['string', 'number', 'boolean'] } },
        },
      },
    },
    config: {
      type: 'array',
      items: { type: 'string', pattern: '^[A-Za-z0-9._-]{1,128}$' },
      uniqueItems: true,
    },
    api: {
      type: 'object',
      additionalProperties: false,
      properties: { listen: { type: 'string', minLength: 1 }, tokenFile: { type: 'string', minLength: 1 } },
    },
    relay: {
      anyOf: [
        { const: false },
        {
          type: 'object',
          additionalProperties: false,
          properties: { listen: { type: 'string', minLength: 1 }, maxStaleness: duration },
        },
      ],
    },
    stateDir: { type: 'string', minLength: 1 },
    ui: { type: 'boolean' },
    log: {
      type: 'object',
      additionalProperties: false,
      properties: { level: { enum: ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] } },
    },
  },
} as const;
