/**
 * Parses `etcd://` and `etcds://` store URLs and resolves the engine's options once.
 *
 * `etcd://[user[:password]@]host1:2379[,host2:2379…][/][?prefix=/muster/]` — several endpoints are
 * separated by commas (which WHATWG `URL` cannot parse, so this parser does it by hand). `etcds://`
 * uses TLS. Options and `MUSTER_ETCD_*` environment variables fill what the URL leaves out; explicit
 * options win over the URL, and the URL wins over the environment.
 */
import { readFileSync } from 'node:fs';
import { invalidArgument, MusterError } from '../../errors.js';
import { type Duration, toMillis } from '../../util/duration.js';
import { CONNECT_TIMEOUT_MS } from './grpc.js';

/** Options of the etcd engine. Every field is optional. */
export interface EtcdStoreOptions {
  /** Prepended to every key, so several deployments can share one etcd. Default: `''` (or `?prefix=`). */
  keyPrefix?: string;
  /** etcd user (also `user@` in the URL, or `MUSTER_ETCD_USERNAME`). Default: no authentication. */
  username?: string;
  /** Password of {@link username} (also in the URL, or `MUSTER_ETCD_PASSWORD`). */
  password?: string;
  /** PEM CA bundle (contents) to verify the servers (`etcds://`). Default: `caFile`, else the system roots. */
  ca?: string | Uint8Array;
  /** Path of the CA bundle (or `MUSTER_ETCD_CA_FILE`). */
  caFile?: string;
  /** PEM client certificate (contents) for mutual TLS. Default: `certFile`. */
  cert?: string | Uint8Array;
  /** Path of the client certificate (or `MUSTER_ETCD_CERT_FILE`). */
  certFile?: string;
  /** PEM client private key (contents). Default: `keyFile`. */
  key?: string | Uint8Array;
  /** Path of the client key (or `MUSTER_ETCD_KEY_FILE`). */
  keyFile?: string;
  /** Deadline of each request; a request that takes longer fails with `MUSTER_TIMEOUT`. Default: {@link DEFAULT_REQUEST_TIMEOUT}. */
  requestTimeout?: Duration;
  /**
   * How long a connection attempt to a member may go without the server's HTTP/2 SETTINGS before it
   * is given up and counted as failed (the member backs off; calls go to other members); `0`: no
   * limit. Default: {@link CONNECT_TIMEOUT_MS} (2 s).
   */
  connectTimeout?: Duration;
  /** Environment to read `MUSTER_ETCD_*` from. Default: `process.env`. */
  env?: NodeJS.ProcessEnv;
}

/** 5 s: long enough for a leader election (etcd's default election timeout is 1 s), short enough to fail over. */
export const DEFAULT_REQUEST_TIMEOUT = '5s';

/** The options after resolution: every field set. */
export interface ResolvedEtcdOptions {
  readonly endpoints: readonly string[];
  readonly tls: boolean;
  readonly keyPrefix: string;
  readonly auth: { readonly username: string; readonly password: string } | undefined;
  readonly ca: Buffer | undefined;
  readonly cert: Buffer | undefined;
  readonly key: Buffer | undefined;
  readonly requestTimeoutMs: number;
  readonly connectTimeoutMs: number;
  /** The URL with the password removed, for logs. */
  readonly redactedUrl: string;
}

/**
 * Parses an etcd store URL and merges options and environment. Throws `MUSTER_UNSUPPORTED_URL` for
 * a URL that is not `etcd://` / `etcds://` or names no endpoint, `MUSTER_INVALID_ARGUMENT` for bad
 * options or unreadable certificate files.
 */
export function resolveEtcdOptions(url: string, options: EtcdStoreOptions = {}): ResolvedEtcdOptions {
  const env = options.env ?? process.env;
  const m = /^(etcds?):\/\/(?:([^@/]*)@)?([^/?#]*)\/?(?:\?([^#]*))?$/.exec(url);
  if (m === null) {
    throw new MusterError(
      'MUSTER_UNSUPPORTED_URL',
      `'${redact(url)}' is not an etcd URL; use etcd://host:2379[,host2:2379]`,
      {
        details: { url: redact(url) },
      },
    );
  }
  const [, scheme, userinfo, hostList, query] = m as unknown as [
    string,
    string,
    string | undefined,
    string,
    string | undefined,
  ];
  const tls = scheme === 'etcds';
  const endpoints = hostList
    .split(',')
    .map((h) => h.trim())
    .filter((h) => h.length > 0)
    .map((h) => (/:\d+$/.test(h) || h.startsWith('[') ? h : `${h}:2379`));
  if (endpoints.length === 0) {
    throw new MusterError(
      'MUSTER_UNSUPPORTED_URL',
      `'${redact(url)}' names no etcd endpoint; use etcd://host:2379`,
      {
        details: { url: redact(url) },
      },
    );
  }
  const params = new URLSearchParams(query ?? '');
  let urlUser: string | undefined;
  let urlPassword: string | undefined;
  if (userinfo !== undefined && userinfo.length > 0) {
    const colon = userinfo.indexOf(':');
    urlUser = decodeURIComponent(colon < 0 ? userinfo : userinfo.slice(0, colon));
    urlPassword = colon < 0 ? undefined : decodeURIComponent(userinfo.slice(colon + 1));
  }
  const username = options.username ?? urlUser ?? env.MUSTER_ETCD_USERNAME;
  const password = options.password ?? urlPassword ?? env.MUSTER_ETCD_PASSWORD;
  if (password !== undefined && username === undefined) {
    throw invalidArgument('an etcd password was given without a username');
  }
  const keyPrefix = options.keyPrefix ?? params.get('prefix') ?? env.MUSTER_ETCD_PREFIX ?? '';
  if (typeof keyPrefix !== 'string') throw invalidArgument('keyPrefix must be a string');

  const ca = pem(options.ca, options.caFile ?? env.MUSTER_ETCD_CA_FILE, 'CA');
  const cert = pem(options.cert, options.certFile ?? env.MUSTER_ETCD_CERT_FILE, 'client certificate');
  const key = pem(options.key, options.keyFile ?? env.MUSTER_ETCD_KEY_FILE, 'client key');
  if ((cert === undefined) !== (key === undefined)) {
    throw invalidArgument(
      'a client certificate needs its key, and a key its certificate (cert/certFile and key/keyFile)',
    );
  }
  if (!tls && (ca !== undefined || cert !== undefined)) {
    throw invalidArgument(`TLS files were given for a plain-text URL; use etcds:// instead of etcd://`);
  }
  return {
    endpoints,
    tls,
    keyPrefix,
    auth: username === undefined ? undefined : { username, password: password ?? '' },
    ca,
    cert,
    key,
    requestTimeoutMs: toMillis(options.requestTimeout ?? DEFAULT_REQUEST_TIMEOUT, 'requestTimeout'),
    connectTimeoutMs: toMillis(options.connectTimeout ?? CONNECT_TIMEOUT_MS, 'connectTimeout'),
    redactedUrl: redact(url),
  };
}

function pem(
  contents: string | Uint8Array | undefined,
  file: string | undefined,
  what: string,
): Buffer | undefined {
  if (contents !== undefined) return Buffer.from(contents);
  if (file === undefined || file === '') return undefined;
  try {
    return readFileSync(file);
  } catch (err) {
    throw new MusterError(
      'MUSTER_INVALID_ARGUMENT',
      `cannot read the etcd ${what} file '${file}': ${(err as Error).message}`,
      {
        cause: err,
        details: { file },
      },
    );
  }
}

/** The URL with any password replaced by `***`. */
export function redact(url: string): string {
  return url.replace(/^(etcds?:\/\/[^:@/]*):[^@/]*@/, '$1:***@');
}
