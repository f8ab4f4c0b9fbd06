/**
 * Opens a store by URL, including `etcd://` while the etcd engine is not yet registered with
 * `openStore` (remove this once `src/store/open.ts` registers it).
 */
import { isMusterError } from '../errors.js';
import { openStore, type OpenStoreOptions } from '../store/open.js';
import type { Store } from '../store/types.js';

/** `openStore`, falling back to the etcd engine for `etcd://` and `etcds://` URLs. */
export async function openAnyStore(url: string, options: OpenStoreOptions = {}): Promise<Store> {
  try {
    return await openStore(url, options);
  } catch (err) {
    if (!isMusterError(err, 'MUSTER_UNSUPPORTED_URL') || !/^etcds?:\/\//.test(url)) throw err;
    const { openEtcdStore } = await import('../store/etcd/index.js');
    return openEtcdStore(url);
  }
}
