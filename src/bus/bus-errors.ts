/** The bus's coded errors, in their own module so routing.ts and bus.ts can both use them without a cycle. */
import { MusterError } from '../errors.js';

export function noInstance(service: string, registered: number): MusterError {
  return new MusterError(
    'MUSTER_NO_INSTANCE',
    `no live, healthy instance serves '${service}' (${registered} registered); start one or check \`muster bus ls\``,
    { details: { service, registered } },
  );
}

export function timeoutError(service: string, method: string, timeoutMs: number): MusterError {
  return new MusterError('MUSTER_TIMEOUT', `${service}.${method} did not answer within ${timeoutMs} ms`, {
    details: { service, method, timeoutMs },
  });
}
