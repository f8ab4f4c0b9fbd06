/**
 * A checker for the Prometheus text exposition format (version 0.0.4): every line is a `# HELP`,
 * a `# TYPE`, a comment, or `name{label="value",…} value [timestamp]`; every sample's family was
 * declared by a TYPE line before it. Returns the samples so tests can read values.
 */
export interface Sample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

const NAME = '[a-zA-Z_:][a-zA-Z0-9_:]*';
const LABEL = `[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\\\\n]|\\\\[\\\\"n])*"`;
const SAMPLE = new RegExp(`^(${NAME})(?:\\{((?:${LABEL})(?:,(?:${LABEL}))*,?)?\\})? (\\S+)(?: -?[0-9]+)?$`);
const TYPES = new Set(['counter', 'gauge', 'histogram', 'summary', 'untyped']);

/** Parses and checks `text`; throws an Error naming the first bad line. */
export function parsePrometheusText(text: string): Sample[] {
  const samples: Sample[] = [];
  const families = new Map<string, string>();
  const lines = text.split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  lines.forEach((line, i) => {
    const bad = (why: string): Error => new Error(`line ${i + 1} ${why}: ${JSON.stringify(line)}`);
    if (line === '') return;
    if (line.startsWith('#')) {
      const m = new RegExp(`^# (HELP|TYPE) (${NAME}) (.*)$`).exec(line);
      if (m === null) {
        if (/^# (HELP|TYPE)/.test(line)) throw bad('is a malformed HELP/TYPE line');
        return;
      }
      if (m[1] === 'TYPE') {
        if (!TYPES.has(m[3] as string)) throw bad('has an unknown type');
        if (families.has(m[2] as string)) throw bad('declares a family twice');
        families.set(m[2] as string, m[3] as string);
      }
      return;
    }
    const m = SAMPLE.exec(line);
    if (m === null) throw bad('is not a sample');
    const name = m[1] as string;
    const family = [name, name.replace(/_(bucket|sum|count|total|created)$/, '')].find((n) =>
      families.has(n),
    );
    if (family === undefined) throw bad('has no TYPE line before it');
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[l[1] as string] = (l[2] as string).replace(/\\n/g, '\n').replace(/\\(.)/g, '$1');
    }
    // Values are Go floats: digits, or NaN / +Inf / -Inf in any case (prom-client writes `Nan`).
    const raw = (m[3] as string).toLowerCase();
    const value = /^[+-]?inf$/.test(raw)
      ? raw.startsWith('-')
        ? -Infinity
        : Infinity
      : raw === 'nan'
        ? NaN
        : /^[+-]?(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?$/.test(raw)
          ? Number(raw)
          : undefined;
    if (value === undefined) throw bad('has a value that is not a number');
    samples.push({ name, labels, value });
  });
  return samples;
}

/** The value of the first sample named `name` whose labels include `labels`. */
export function sampleValue(
  samples: readonly Sample[],
  name: string,
  labels: Record<string, string> = {},
): number | undefined {
  return samples.find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
    ?.value;
}
