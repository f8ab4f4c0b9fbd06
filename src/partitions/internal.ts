/**
 * For sibling capabilities (the bus, the proxy): the shared watched view of a service's ownership
 * state. Until the view capability's `openServiceView` lands, this is how owners are read.
 */
export { acquireView, releaseView, ServiceView } from './view.js';
export { ownershipKeys, partitionIds } from './spec.js';
