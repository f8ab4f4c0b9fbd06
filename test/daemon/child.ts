/** A child process whose stdout is JSON lines (or text lines) the test waits for. */
import { type ChildProcess, spawn } from 'node:child_process';

export interface ChildRun {
  readonly child: ChildProcess;
  /** Lines so far (stdout). */
  readonly lines: string[];
  /** stderr so far, for failure messages. */
  stderr(): string;
  /** Resolves with the first line (parsed when JSON) for which `match` is true, now or later. */
  waitFor<T = Record<string, unknown>>(
    match: (line: string, json: T | undefined) => boolean,
    ms?: number,
  ): Promise<T | string>;
  /** Resolves with the first stdout line for which `match` is true, now or later. */
  waitForLine(match: (line: string) => boolean, ms?: number): Promise<string>;
  readonly exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  kill(): void;
}

export function startChild(
  command: string,
  args: readonly string[],
  env: Record<string, string> = {},
): ChildRun {
  const child = spawn(command, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: string[] = [];
  let err = '';
  let buf = '';
  const listeners = new Set<() => void>();
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    buf += chunk;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      lines.push(buf.slice(0, i));
      buf = buf.slice(i + 1);
    }
    for (const l of [...listeners]) l();
  });
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
    err += chunk;
    for (const l of [...listeners]) l();
  });
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => {
      resolve({ code, signal });
      for (const l of [...listeners]) l();
    }),
  );
  let exited = false;
  void exit.then(() => (exited = true));
  const parse = <T>(line: string): T | undefined => {
    try {
      return JSON.parse(line) as T;
    } catch {
      return undefined;
    }
  };
  const self: ChildRun = {
    child,
    lines,
    waitForLine: async (match, ms) => {
      let found = '';
      await self.waitFor((line) => {
        if (match(line)) found = line;
        return match(line);
      }, ms);
      return found;
    },
    stderr: () => err,
    exit,
    kill: () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    },
    waitFor<T>(match: (line: string, json: T | undefined) => boolean, ms = 20_000): Promise<T | string> {
      return new Promise((resolve, reject) => {
        const check = (): boolean => {
          for (const l of lines) {
            const json = parse<T>(l);
            if (match(l, json)) {
              done();
              resolve(json ?? l);
              return true;
            }
          }
          if (exited || child.exitCode !== null) {
            done();
            reject(
              new Error(
                `the child exited before the line came\nstdout:\n${lines.join('\n')}\nstderr:\n${err}`,
              ),
            );
            return true;
          }
          return false;
        };
        const timer = setTimeout(() => {
          done();
          reject(
            new Error(`no matching line within ${ms} ms\nstdout:\n${lines.join('\n')}\nstderr:\n${err}`),
          );
        }, ms);
        const done = (): void => {
          clearTimeout(timer);
          listeners.delete(onData);
        };
        const onData = (): void => void check();
        if (!check()) listeners.add(onData);
      });
    },
  };
  return self;
}

/** Resolves `p`, or rejects after `ms` with `what` in the message. */
export function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms);
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(t);
        reject(e instanceof Error ? e : new Error(String(e)));
      },
    );
  });
}
