/**
 * Placeholders in commands, environment values, URLs and check lines: `{partition}`, `{port}`,
 * `{pid}`, `{check}`, `{service}`, `{instance}`, `{token}`. Unknown names are left as written.
 */
import { createServer } from 'node:net';

export type TemplateVars = Readonly<
  Partial<Record<'partition' | 'port' | 'pid' | 'check' | 'service' | 'instance' | 'token', string | number>>
>;

const PLACEHOLDER = /\{(partition|port|pid|check|service|instance|token)\}/g;

/** Substitutes the placeholders whose value is known. */
export function substitute(text: string, vars: TemplateVars): string {
  return text.replace(PLACEHOLDER, (whole, name: keyof TemplateVars) => {
    const v = vars[name];
    return v === undefined ? whole : String(v);
  });
}

/** True when `text` mentions `{name}`. */
export function mentions(text: string, name: keyof TemplateVars): boolean {
  return text.includes(`{${name}}`);
}

/**
 * A free loopback port: the OS picks one for a listener that is closed at once. The child binds it a
 * moment later; the kernel does not hand out a just-released port again soon, so a clash needs another
 * process binding port 0 in between and getting the same number — it shows as a child that fails to
 * start, is restarted and gets another port.
 */
export function freeLoopbackPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const a = server.address();
      const port = typeof a === 'object' && a !== null ? a.port : 0;
      server.close(() => resolve(port));
    });
  });
}
