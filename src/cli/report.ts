/** Exit statuses and the one place where errors become them (shared by `main` and `agent-main`). */
import { readFileSync } from 'node:fs';
import { CommanderError } from 'commander';
import { isMusterError } from '../errors.js';

/** Exit statuses: 0 success, 1 a coded muster error, 2 bad usage, 70 an unexpected failure. */
export const EXIT = { ok: 0, error: 1, usage: 2, internal: 70 } as const;

export function packageVersion(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as {
    version: string;
  };
  return pkg.version;
}

/** Prints an error as `CODE: message` (or JSON) and returns the exit status for it. */
export function reportError(err: unknown, json = false): number {
  if (err instanceof CommanderError) {
    // commander already printed the message (or help/version, which exit 0)
    return err.exitCode === 0 ? EXIT.ok : EXIT.usage;
  }
  if (isMusterError(err)) {
    if (json) process.stderr.write(`${JSON.stringify({ error: err.toJSON() })}\n`);
    else process.stderr.write(`${err.code}: ${err.message}\n`);
    return EXIT.error;
  }
  process.stderr.write(
    `muster: unexpected failure: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
  );
  return EXIT.internal;
}
