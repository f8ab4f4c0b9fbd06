/** Bearer tokens: read from a file, compared in constant time. */
import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { invalidArgument } from '../errors.js';

/** Shorter tokens are refused: 16 characters is the floor; `openssl rand -hex 32` gives 64. */
export const MIN_TOKEN_LENGTH = 16;

/**
 * Reads a token: the first line of `file`, trimmed. Throws `MUSTER_INVALID_ARGUMENT` when the file
 * cannot be read or the token is shorter than {@link MIN_TOKEN_LENGTH}; `what` names the flag.
 */
export function readTokenFile(file: string, what = '--token-file'): string {
  let token: string;
  try {
    token = readFileSync(file, 'utf8').split(/\r?\n/)[0]?.trim() ?? '';
  } catch (err) {
    throw invalidArgument(`cannot read ${what} ${file}: ${(err as Error).message}`, { file });
  }
  checkToken(token, what);
  return token;
}

/** Throws `MUSTER_INVALID_ARGUMENT` when `token` is too short to be a secret. */
export function checkToken(token: string, what = 'the token'): void {
  if (token.length < MIN_TOKEN_LENGTH) {
    throw invalidArgument(
      `${what}: the token must be at least ${MIN_TOKEN_LENGTH} characters long (e.g. \`openssl rand -hex 32\`)`,
    );
  }
}

/**
 * True when `presented` equals `expected`, in time that depends on neither: both are hashed to 32
 * bytes first, so `timingSafeEqual` compares equal lengths and not even the length of the secret leaks.
 */
export function tokensEqual(presented: string, expected: string): boolean {
  const a = createHash('sha256').update(presented).digest();
  const b = createHash('sha256').update(expected).digest();
  return timingSafeEqual(a, b);
}
