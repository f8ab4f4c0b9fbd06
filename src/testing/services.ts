/**
 * The pattern for suites that need a real server binary (etcd, PostgreSQL, …).
 *
 * Without the binary on PATH the suite is skipped with a line saying what to install; with
 * `MUSTER_REQUIRE_SERVICES=1` (set by CI) a missing binary fails the run instead, so a broken CI
 * machine can never pass by skipping.
 */
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';
import { MusterError } from '../errors.js';

/** Finds `name` on PATH (or returns an absolute path as is); `undefined` when absent. */
export function findBinary(name: string, path = process.env.PATH ?? ''): string | undefined {
  const candidates = name.includes('/')
    ? [name]
    : path
        .split(delimiter)
        .filter(Boolean)
        .map((dir) => join(dir, name));
  for (const candidate of candidates) {
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here; keep looking
    }
  }
  return undefined;
}

/** True when CI demands that every service be present (`MUSTER_REQUIRE_SERVICES=1`). */
export function servicesRequired(env: NodeJS.ProcessEnv = process.env): boolean {
  return env.MUSTER_REQUIRE_SERVICES === '1' || env.MUSTER_REQUIRE_SERVICES === 'true';
}

/**
 * For `describe(name, { skip: needBinary('etcd', 'apt-get install etcd-server') }, …)`:
 * returns `false` when the binary is present, a skip message when it is absent, and throws
 * `MUSTER_MISSING_BINARY` when it is absent and services are required.
 */
export function needBinary(
  name: string,
  install: string,
  env: NodeJS.ProcessEnv = process.env,
): false | string {
  if (findBinary(name, env.PATH) !== undefined) return false;
  const message = `'${name}' is not on PATH; install it with: ${install}`;
  if (servicesRequired(env)) {
    throw new MusterError(
      'MUSTER_MISSING_BINARY',
      `${message} (MUSTER_REQUIRE_SERVICES=1 forbids skipping)`,
      {
        details: { binary: name },
      },
    );
  }
  process.stderr.write(`# SKIP: ${message}\n`);
  return `${message} (skipped)`;
}
