/**
 * Bus TLS material read from PEM files — at start (the CLI's `--tls-*` flags) and again on a
 * daemon's reload, so renewed certificates are used without a restart (`Bus.reloadTls`).
 */
import { readFile } from 'node:fs/promises';
import { invalidArgument } from '../errors.js';
import type { BusTlsOptions } from './types.js';

/** Where a node's TLS material lives. */
export interface BusTlsFiles {
  /** PEM certificate (chain) file. */
  readonly cert: string;
  /** PEM private key file. */
  readonly key: string;
  /** PEM CA file peers' certificates must chain to. Default: Node's public CAs. */
  readonly ca?: string;
  readonly mutual?: boolean;
}

/** Reads the files. Throws `MUSTER_INVALID_ARGUMENT` naming the file that cannot be read. */
export async function readBusTlsFiles(files: BusTlsFiles): Promise<BusTlsOptions> {
  const read = async (file: string, what: string): Promise<Buffer> => {
    try {
      return await readFile(file);
    } catch (err) {
      throw invalidArgument(`cannot read the bus TLS ${what} ${file}: ${(err as Error).message}`);
    }
  };
  const [cert, key, ca] = await Promise.all([
    read(files.cert, 'certificate'),
    read(files.key, 'key'),
    files.ca === undefined ? undefined : read(files.ca, 'CA'),
  ]);
  return {
    cert,
    key,
    ...(ca === undefined ? {} : { ca }),
    ...(files.mutual === true ? { mutual: true } : {}),
  };
}
