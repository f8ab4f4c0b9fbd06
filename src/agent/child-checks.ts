/**
 * A child's health checks: membership's checker (script, HTTP, TTL — one implementation), with the
 * agent's placeholders substituted (`{pid}`, `{partition}`, `{check}`…) and the agent's actions:
 * `restart`, `release`, or an `{ exec }` handler run through the process kernel.
 */
import type { Logger } from 'pino';
import { type CheckHandler, type CheckOptions, HealthChecks } from '../membership/index.js';
import type { CheckActionConfig, CheckConfig } from './config.js';
import { type ProcessRegistry, spawnProcess } from './kernel.js';
import { substitute, type TemplateVars } from './template.js';

export interface ChildChecksOptions {
  readonly checks: readonly CheckConfig[];
  readonly vars: TemplateVars;
  /** `<service>/<partition>`, for the handlers' process labels. */
  readonly label: string;
  readonly registry: ProcessRegistry;
  readonly log: Logger;
  readonly restart: (reason: string) => void;
  readonly release: (reason: string) => void;
}

/**
 * Starts the checks of one child. Per-child checks start `passing` unless configured otherwise (the
 * child was just declared ready) and never count toward the instance's health (`markUnhealthy: false`):
 * their actions act on the partition.
 */
export function startChildChecks(o: ChildChecksOptions): HealthChecks {
  const why = (t: { check: string; output: string }): string =>
    `check '${t.check}' failing: ${t.output.split('\n')[0] ?? ''}`;
  const checks = new HealthChecks({
    actions: { restart: (t) => o.restart(why(t)), release: (t) => o.release(why(t)) },
  });
  checks.on('error', (err, check) => o.log.warn({ check, err: String(err) }, 'check handler failed'));
  for (const c of o.checks) {
    const cv = { ...o.vars, check: c.name };
    const exec = (a: CheckActionConfig): CheckHandler | undefined => {
      if (typeof a !== 'object') return undefined;
      return async () => {
        const h = await spawnProcess({
          command: a.exec.map((x) => substitute(x, cv)),
          label: `${o.label}/${c.name}`,
          registry: o.registry,
          grace: 1000,
          onLine: (stream, line) => o.log.info({ check: c.name, stream, line }, 'check handler output'),
        });
        await h.exited;
        await h.kill();
      };
    };
    const actions = c.onFailing === 'restart' || c.onFailing === 'release' ? [c.onFailing] : [];
    const base = {
      name: c.name,
      initialStatus: c.initialStatus ?? 'passing',
      markUnhealthy: false,
      actions,
      ...(c.thresholds ? { thresholds: c.thresholds } : {}),
      ...(exec(c.onFailing) ? { onFailing: exec(c.onFailing) } : {}),
      ...(exec(c.onWarning) ? { onWarning: exec(c.onWarning) } : {}),
      ...(exec(c.onPassing) ? { onPassing: exec(c.onPassing) } : {}),
    };
    const options: CheckOptions =
      c.kind === 'ttl'
        ? { ...base, kind: 'ttl', ttl: c.ttlMs ?? 0 }
        : c.kind === 'http'
          ? {
              ...base,
              kind: 'http',
              url: substitute(c.http ?? '', cv),
              ...(c.intervalMs !== undefined ? { interval: c.intervalMs } : {}),
              ...(c.timeoutMs !== undefined ? { timeout: c.timeoutMs } : {}),
            }
          : {
              ...base,
              kind: 'script',
              command: (c.script ?? []).map((x) => substitute(x, cv)),
              ...(c.intervalMs !== undefined ? { interval: c.intervalMs } : {}),
              ...(c.timeoutMs !== undefined ? { timeout: c.timeoutMs } : {}),
            };
    checks.add(options);
  }
  return checks;
}
