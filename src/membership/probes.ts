/**
 * The probes behind script and HTTP checks, with Consul's mapping of outcomes to statuses:
 * - script: exit 0 passing, exit 1 warning, any other exit, a signal or a spawn error failing;
 * - http: GET; 2xx passing, 429 warning, anything else, a network error or a timeout failing.
 * A probe that outlives its timeout is aborted (a script's whole process group is SIGKILLed).
 */
import { isMusterError } from '../errors.js';
import { type ProcessHandle, spawnProcess } from '../process/index.js';
import type { HealthStatus } from './types.js';
import { onAbort } from '../util/abort.js';

/** The outcome of one probe run. */
export interface ProbeResult {
  readonly status: HealthStatus;
  /** Captured output (stdout+stderr, or the HTTP body), truncated to {@link MAX_OUTPUT_BYTES}. */
  readonly output: string;
}

/** 4 KiB of output per run, as Consul keeps: enough for a reason, not a log. */
export const MAX_OUTPUT_BYTES = 4096;

/**
 * 2 s: a script whose main process exited but left children behind gets SIGTERM, then SIGKILL after
 * this long (through the process kernel); a probe is a short command, not a service.
 */
export const PROBE_GRACE_MS = 2000;

/**
 * Runs `command` (a shell line, or argv without a shell) through the process kernel, in its own
 * process group; resolves when the whole group is gone. When `signal` fires (the probe's timeout) the
 * group is SIGKILLed, children included.
 */
export async function runScriptProbe(
  command: string | readonly string[],
  signal: AbortSignal,
  options: { cwd?: string | undefined; env?: NodeJS.ProcessEnv | undefined } = {},
): Promise<ProbeResult> {
  const argv = typeof command === 'string' ? ['/bin/sh', '-c', command] : command;
  let output = '';
  const append = (_stream: 'stdout' | 'stderr', line: string): void => {
    if (output.length < MAX_OUTPUT_BYTES) output = (output + line + '\n').slice(0, MAX_OUTPUT_BYTES);
  };
  let child: ProcessHandle;
  try {
    child = await spawnProcess({
      command: argv,
      ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
      ...(options.env === undefined ? {} : { env: definedOnly(options.env), envReplace: true }),
      label: 'probe',
      onLine: append,
      grace: PROBE_GRACE_MS,
    });
  } catch (err) {
    const reason = isMusterError(err) ? err.message : String(err);
    return { status: 'failing', output: `could not start: ${reason}` };
  }
  let killedForTimeout = false;
  const kill = (): void => {
    killedForTimeout = true;
    void child.kill();
  };
  const offAbort = onAbort(signal, kill);
  const { code, signal: sig } = await child.gone;
  offAbort();
  if (killedForTimeout) return { status: 'failing', output: `timed out and was killed\n${output}` };
  if (code === 0) return { status: 'passing', output };
  if (code === 1) return { status: 'warning', output };
  return { status: 'failing', output: sig ? `killed by ${sig}\n${output}` : output };
}

function definedOnly(env: NodeJS.ProcessEnv): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) if (v !== undefined) out[k] = v;
  return out;
}

/** GETs `url`; resolves with the status mapped from the HTTP status code. */
export async function runHttpProbe(
  url: string,
  signal: AbortSignal,
  headers: Readonly<Record<string, string>> = {},
): Promise<ProbeResult> {
  try {
    const res = await fetch(url, { method: 'GET', headers, signal });
    const body = await readLimited(res);
    const line = `HTTP ${res.status} ${res.statusText}`;
    const output = body ? `${line}\n${body}` : line;
    if (res.status >= 200 && res.status < 300) return { status: 'passing', output };
    if (res.status === 429) return { status: 'warning', output };
    return { status: 'failing', output };
  } catch (err) {
    if (signal.aborted) return { status: 'failing', output: `timed out: GET ${url}` };
    const cause = err instanceof Error && err.cause instanceof Error ? `: ${err.cause.message}` : '';
    return { status: 'failing', output: `GET ${url} failed: ${String(err)}${cause}` };
  }
}

/** The body as text, cut to {@link MAX_OUTPUT_BYTES} (health endpoints answer with a few bytes). */
async function readLimited(res: Response): Promise<string> {
  const text = await res.text();
  return text.slice(0, MAX_OUTPUT_BYTES);
}
