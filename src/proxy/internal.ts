/** What the CLI needs from the proxy beyond its public surface: the admin bearer-token reader. */
export { adminToken } from './admin-token.js';
