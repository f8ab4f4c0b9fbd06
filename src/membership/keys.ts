/**
 * The store key layout for services (brief §1), shared by membership, partitions and the proxy:
 *
 * ```
 * <root>services/<service>/spec
 * <root>services/<service>/instances/<id>     (leased)
 * <root>services/<service>/owners/<partition> (leased)
 * <root>services/<service>/pins/<partition>
 * <root>services/<service>/routes/<key>
 * <root>services/<service>/drain/<id>       (under the instance's lease: `muster drain`)
 * <root>status/<service>/agents/<id>        (leased: an agent's status record, `muster status`)
 * <root>status/<service>/proxies/<id>       (leased: a proxy worker's held queues, the dashboard)
 * ```
 *
 * Status records live outside `services/<service>/` on purpose: every instance and proxy of the
 * fleet watches that prefix, so a record written there several times a second during a hand-off
 * would be delivered to, and decoded by, all of them for nothing. Only the dashboard and `muster
 * status` read `status/`.
 */
import { invalidArgument } from '../errors.js';

/** Where muster's keys live unless told otherwise; one store can host several roots. */
export const DEFAULT_ROOT = '/muster/';

/** Service names: 1–63 characters, letters, digits, `.`, `_` and `-`, starting with a letter or digit. */
const SERVICE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
/** Instance ids and partition names: 1–128 characters, no `/`, no whitespace or control characters. */
const SEGMENT = /^[^/\s\p{Cc}]{1,128}$/u;

/** Validates a service name; throws `MUSTER_INVALID_ARGUMENT` naming the rule. */
export function checkServiceName(service: unknown): asserts service is string {
  if (typeof service !== 'string' || !SERVICE_NAME.test(service)) {
    throw invalidArgument(
      `service name must be 1–63 letters, digits, '.', '_' or '-' starting with a letter or digit, got ${JSON.stringify(service)}`,
    );
  }
}

/** Validates one key segment (an instance id or partition); `what` names it in the message. */
export function checkSegment(value: unknown, what: string): asserts value is string {
  if (typeof value !== 'string' || !SEGMENT.test(value)) {
    throw invalidArgument(
      `${what} must be 1–128 characters without '/' or whitespace, got ${JSON.stringify(value)}`,
    );
  }
}

/** Normalizes a root prefix: must start with `/`; a trailing `/` is added when missing. */
export function normalizeRoot(root: string = DEFAULT_ROOT): string {
  if (typeof root !== 'string' || !root.startsWith('/')) {
    throw invalidArgument(`root prefix must start with '/', got ${JSON.stringify(root)}`);
  }
  return root.endsWith('/') ? root : `${root}/`;
}

/** The keys of one service under a root. */
export interface ServiceKeys {
  readonly root: string;
  readonly service: string;
  /** `<root>services/<service>/` */
  readonly prefix: string;
  /** `<root>services/<service>/spec` */
  readonly spec: string;
  /** `<root>services/<service>/instances/` */
  readonly instances: string;
  /** `<root>services/<service>/owners/` */
  readonly owners: string;
  /** `<root>services/<service>/pins/` */
  readonly pins: string;
  /** `<root>services/<service>/routes/` */
  readonly routes: string;
  /** `<root>services/<service>/drain/`: operator drains (`muster drain`), one key per instance. */
  readonly drains: string;
  /** `<root>status/<service>/agents/`: the agents' status records (not under the watched `prefix`). */
  readonly agents: string;
  /** `<root>status/<service>/proxies/`: the proxy workers' held queues (not under the watched `prefix`). */
  readonly proxies: string;
  instance(id: string): string;
  owner(partition: string): string;
  pin(partition: string): string;
  route(key: string): string;
  drain(id: string): string;
  agent(id: string): string;
  proxy(id: string): string;
}

/** The key layout of `service` under `root` (default {@link DEFAULT_ROOT}). Validates both. */
export function serviceKeys(root: string | undefined, service: string): ServiceKeys {
  const r = normalizeRoot(root);
  checkServiceName(service);
  const prefix = `${r}services/${service}/`;
  const instances = `${prefix}instances/`;
  const owners = `${prefix}owners/`;
  const pins = `${prefix}pins/`;
  const routes = `${prefix}routes/`;
  const drains = `${prefix}drain/`;
  const status = `${statusPrefix(r)}${service}/`;
  const agents = `${status}agents/`;
  const proxies = `${status}proxies/`;
  return {
    root: r,
    service,
    prefix,
    spec: `${prefix}spec`,
    instances,
    owners,
    pins,
    routes,
    drains,
    agents,
    proxies,
    instance: (id) => `${instances}${id}`,
    owner: (partition) => `${owners}${partition}`,
    pin: (partition) => `${pins}${partition}`,
    route: (key) => `${routes}${key}`,
    drain: (id) => `${drains}${id}`,
    agent: (id) => `${agents}${id}`,
    proxy: (id) => `${proxies}${id}`,
  };
}

/** `<root>services/`: the prefix of every service. */
export function servicesPrefix(root?: string): string {
  return `${normalizeRoot(root)}services/`;
}

/** `<root>status/`: the prefix of every service's status records (agents, proxies). */
export function statusPrefix(root?: string): string {
  return `${normalizeRoot(root)}status/`;
}

/** Splits `<root>services/<service>/instances/<id>`; `undefined` for any other key. */
export function parseInstanceKey(
  root: string | undefined,
  key: string,
): { service: string; id: string } | undefined {
  return parseIdKey(root, key, 'instances');
}

/** Splits `<root>services/<service>/drain/<id>` (an operator's drain); `undefined` for any other key. */
export function parseDrainKey(
  root: string | undefined,
  key: string,
): { service: string; id: string } | undefined {
  return parseIdKey(root, key, 'drain');
}

function parseIdKey(
  root: string | undefined,
  key: string,
  kind: 'instances' | 'drain',
): { service: string; id: string } | undefined {
  const base = servicesPrefix(root);
  if (!key.startsWith(base)) return undefined;
  const parts = key.slice(base.length).split('/');
  if (parts.length !== 3 || parts[1] !== kind) return undefined;
  const [service, , id] = parts as [string, string, string];
  return service && id ? { service, id } : undefined;
}
