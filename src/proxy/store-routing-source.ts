/**
 * The proxy's {@link RoutingSource} over the partitions capability's watched service view
 * (`openServiceView`, Contract C): one shared watch per store and service in the process, re-listed
 * after a compaction or a broken stream by the view itself. Nothing here reads the store on a request.
 */
import { openServiceView, partitionIds, type ServiceSpec } from '../partitions/index.js';
import type { Store } from '../store/index.js';
import type { RoutingSource, RoutingSourceOptions } from './routing-source.js';

/** Opens the watched routing state of `service` on `store`. Call `ready()` before routing. */
export function openRoutingSource(
  store: Store,
  service: string,
  options: RoutingSourceOptions = {},
): RoutingSource {
  const view = openServiceView(store, service, {
    ...(options.root === undefined ? {} : { root: options.root }),
    ...(options.clock === undefined ? {} : { clock: options.clock }),
  });
  let updatedAt = 0;
  let spec: ServiceSpec | undefined;
  let ids: readonly string[] | undefined;
  view.subscribe(() => {
    updatedAt = performance.now();
  });
  return {
    get revision() {
      return view.revision;
    },
    get updatedAt() {
      return updatedAt;
    },
    get partitions() {
      if (view.spec !== spec) {
        spec = view.spec;
        ids = spec === undefined ? undefined : partitionIds(spec.partitions);
      }
      return ids;
    },
    get owners() {
      return view.owners;
    },
    get instances() {
      return view.instances;
    },
    get routes() {
      return view.routes;
    },
    destination: (partition) => view.destination(partition),
    async ready(o = {}) {
      await view.ready(o);
      updatedAt ||= performance.now();
    },
    subscribe: (listener) => view.subscribe(listener),
    close: () => view.close(),
  };
}
