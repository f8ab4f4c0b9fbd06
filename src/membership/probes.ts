/**
 * The probes behind script and HTTP checks, with Consul's mapping of outcomes to statuses:
 * - script: exit 0 passing, exit 1 warning, any other exit, a signal or a spawn error failing;
 * - http: GET; 2xx passing, 429 warning, anything else, a network error or a timeout failing.
 * A probe that outlives its timeout is aborted (a script's whole process group is SIGKILLed).
 */
import { spawn } from 'node:child_process';
import type { HealthStatus } from './types.js';

/** The outcome of one probe run. */
export interface ProbeResult {
  readonly status: HealthStatus;
  /** Captured output (stdout+stderr, or the HTTP body), truncated to {@link MAX_OUTPUT_BYTES}. */
  readonly output: string;
}

/** 4 KiB of output per run, as Consul keeps: enough for a reason, not a log. */
export const MAX_OUTPUT_BYTES = 4096;

/** Runs `command` (a shell line, or argv without a shell); resolves when it exits or is killed. */
export function runScriptProbe(
  command: string | readonly string[],
  signal: AbortSignal,
  options: { cwd?: string | undefined; env?: NodeJS.ProcessEnv | undefined } = {},
): Promise<ProbeResult> {
  return new Promise<ProbeResult>((resolve) => {
    const [file, args] =
      typeof command === 'string' ? ['/bin/sh', ['-c', command]] : [command[0] ?? '', command.slice(1)];
    let output = '';
    const append = (chunk: Buffer): void => {
      if (output.length < MAX_OUTPUT_BYTES)
        output = (output + chunk.toString('utf8')).slice(0, MAX_OUTPUT_BYTES);
    };
    let child: ReturnType<typeof spawn>;
    try {
      child = spawn(file, args, {
        cwd: options.cwd,
        env: options.env ?? process.env,
        stdio: ['ignore', 'pipe', 'pipe'],
        detached: true, // its own process group, so a timeout kills the script's children too
      });
    } catch (err) {
      resolve({ status: 'failing', output: `could not start: ${String(err)}` });
      return;
    }
    let killedForTimeout = false;
    const kill = (): void => {
      killedForTimeout = true;
      try {
        if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
      } catch {
        child.kill('SIGKILL');
      }
    };
    if (signal.aborted) kill();
    else signal.addEventListener('abort', kill, { once: true });
    child.stdout?.on('data', append);
    child.stderr?.on('data', append);
    let settled = false;
    const finish = (result: ProbeResult): void => {
      if (settled) return;
      settled = true;
      signal.removeEventListener('abort', kill);
      resolve(result);
    };
    child.once('error', (err) => finish({ status: 'failing', output: `could not start: ${err.message}` }));
    child.once('close', (code, sig) => {
      if (killedForTimeout) finish({ status: 'failing', output: `timed out and was killed\n${output}` });
      else if (code === 0) finish({ status: 'passing', output });
      else if (code === 1) finish({ status: 'warning', output });
      else finish({ status: 'failing', output: sig ? `killed by ${sig}\n${output}` : output });
    });
  });
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
