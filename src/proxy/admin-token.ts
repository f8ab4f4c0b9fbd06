/** The proxy's admin token: read from `admin.tokenFile`, created there (0600) on first start. */
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';

/** Reads the token from `tokenFile`, creating it (mode 0600, 24 random bytes) when missing; random when no file. */
export function adminToken(tokenFile: string | undefined): string {
  if (tokenFile === undefined) return randomBytes(24).toString('base64url');
  if (!existsSync(tokenFile)) {
    writeFileSync(tokenFile, `${randomBytes(24).toString('base64url')}\n`, { mode: 0o600, flag: 'wx' });
  }
  return readFileSync(tokenFile, 'utf8').trim();
}
