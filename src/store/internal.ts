/**
 * For sibling capabilities (the test harness), not for users: what they need from the store's
 * engines beyond the public surface.
 */
export { adminQuery } from './postgres/admin.js';
