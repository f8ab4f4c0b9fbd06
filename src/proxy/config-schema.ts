/**
 * The JSON Schema of `muster proxy --config FILE` (YAML or JSON). Shipped in the package as this
 * module; docs/proxy.md describes every field. Durations are milliseconds or strings such as `'50s'`.
 */

const duration = {
  anyOf: [
    { type: 'number', minimum: 0 },
    // the form is checked by toMillis, whose message shows the accepted forms
    { type: 'string', minLength: 1 },
  ],
} as const;

const address = { type: 'string', minLength: 1, maxLength: 300 } as const;

/** The proxy configuration file's schema (draft-07, as ajv's default). */
export const PROXY_CONFIG_SCHEMA = {
  $id: 'https://muster.dev/schemas/proxy.json',
  type: 'object',
  additionalProperties: false,
  required: ['service', 'listen', 'key'],
  properties: {
    service: { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$' },
    store: { type: 'string', minLength: 1 },
    root: { type: 'string', pattern: '^/' },
    listen: { anyOf: [address, { type: 'array', items: address, minItems: 1, maxItems: 16 }] },
    key: {
      type: 'string',
      pattern:
        "^(host|header:[!#$%&'*+.^_`|~0-9A-Za-z-]+|query:.+|cookie:[^=;\\s]+|path:/.*:[A-Za-z_][A-Za-z0-9_]*.*)$",
    },
    defaultKey: { type: 'string', minLength: 1, maxLength: 128, pattern: '^[^/\\s]+$' },
    partitions: { type: 'integer', minimum: 1, maximum: 10000000 },
    workers: { type: 'integer', minimum: 1, maximum: 256 },
    drainTimeout: duration,
    hold: {
      type: 'object',
      additionalProperties: false,
      properties: {
        timeout: duration,
        releaseRate: { type: 'number', exclusiveMinimum: 0 },
        maxPerDestination: { type: 'integer', minimum: 0 },
        maxTotal: { type: 'integer', minimum: 0 },
        probeInterval: duration,
        timeoutStatus: { type: 'integer', minimum: 200, maximum: 599 },
        timeoutBody: { type: 'string' },
        retryAfterSeconds: { type: 'integer', minimum: 0 },
      },
    },
    upstream: {
      type: 'object',
      additionalProperties: false,
      properties: {
        connectTimeout: duration,
        headersTimeout: duration,
        bodyTimeout: duration,
        keepAliveTimeout: duration,
        connections: { type: 'integer', minimum: 1, maximum: 100000 },
      },
    },
    client: {
      type: 'object',
      additionalProperties: false,
      properties: {
        headersTimeout: duration,
        requestTimeout: duration,
        keepAliveTimeout: duration,
        idleTimeout: duration,
        maxHeaderSize: { type: 'integer', minimum: 1024, maximum: 1048576 },
      },
    },
    lines: {
      type: 'object',
      additionalProperties: false,
      required: ['listen', 'key'],
      properties: {
        listen: { anyOf: [address, { type: 'array', items: address, minItems: 1, maxItems: 16 }] },
        key: { type: 'string', pattern: '^[^.]+(\\.[^.]+)*$', maxLength: 200 },
        sticky: { type: 'boolean' },
      },
    },
    admin: {
      anyOf: [
        { const: false },
        {
          type: 'object',
          additionalProperties: false,
          properties: { listen: address, tokenFile: { type: 'string', minLength: 1 } },
        },
      ],
    },
  },
} as const;
