// Minimal types for the `hashring` package (ketama consistent hashing), used by the placement benchmark.
declare module 'hashring' {
  type Servers = string | string[] | Record<string, number | { weight?: number; vnodes?: number }>;
  interface Options {
    'vnode count'?: number;
    replicas?: number;
    'max cache size'?: number;
  }
  class HashRing {
    constructor(servers: Servers, algorithm?: string, options?: Options);
    get(key: string): string | undefined;
  }
  export default HashRing;
}
