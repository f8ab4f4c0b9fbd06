/**
 * The operator's dashboard (issue 19, brief §10): a live web view of the fleet, fed by watched views
 * over server-sent events; read-only unless started with a write token. See docs/ui.md.
 */
export { mountUi, type Ui, type UiOptions, SSE_HEARTBEAT_MS } from './server.js';
export { FleetModel, SNAPSHOT_COALESCE_MS, type FleetSnapshot, type ServiceSnapshot } from './fleet.js';
