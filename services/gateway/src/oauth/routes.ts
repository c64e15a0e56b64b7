/**
 * The OAuth 2.0 endpoints in one encapsulated context: form-encoded bodies only (RFC 6749
 * §3.2), with their own small body limit.
 */
import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import { noStore } from '../auth/token-response.js'
import { registerFormParser } from './form-body.js'
import { registerRevokeRoute } from './revoke-route.js'
import { registerTokenRoute, type TokenRouteOptions } from './token-route.js'
import { registerDiscoveryRoute } from './discovery-route.js'
import { registerIntrospectRoute } from './introspect-route.js'
import type { Clock } from '#shared/clock.js'
import type { SigningKeys } from '../keys/signing-keys.js'
import type { RevokedSids } from '../proxy/access.js'

export interface OAuthRoutesOptions extends TokenRouteOptions {
  readonly keys: SigningKeys
  /** The edge-revocation set: introspection answers inactive for its sessions. */
  readonly revoked: RevokedSids
  readonly clock: Clock
}

async function oauthRoutes (app: FastifyInstance, opts: OAuthRoutesOptions): Promise<void> {
  // RFC 6749 §5.1: no-store on every answer, including those refused before a handler runs
  // (a repeated parameter is caught by the body parser).
  app.addHook('onRequest', async (_req, reply) => { noStore(reply) })
  app.removeAllContentTypeParsers()
  registerFormParser(app)
  registerTokenRoute(app, opts)
  registerRevokeRoute(app, opts)
  registerIntrospectRoute(app, opts)
  registerDiscoveryRoute(app, opts)
}

export default fp(oauthRoutes, { name: 'latchkey-oauth-routes', fastify: '5.x', encapsulate: true })
