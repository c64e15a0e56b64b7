/**
 * The OAuth 2.0 endpoints in one encapsulated context: form-encoded bodies only (RFC 6749
 * §3.2), with their own small body limit.
 */
import fp from 'fastify-plugin'
import type { FastifyError, FastifyInstance } from 'fastify'
import { noStore } from '../auth/token-response.js'
import { registerFormParser } from './form-body.js'
import { registerRevokeRoute } from './revoke-route.js'
import { registerTokenRoute, type TokenRouteOptions } from './token-route.js'
import { registerDiscoveryRoute } from './discovery-route.js'
import { INTROSPECTION_PATH, createAccessTokenCheck, registerIntrospectRoute } from './introspect-route.js'
import { isLatchkeyError } from '#shared/errors.js'
import { gatewayError, type GatewayErrorCode } from '../errors.js'
import { handleError } from '../ops/error-handler.js'
import type { Clock } from '#shared/clock.js'
import type { SigningKeys } from '../keys/signing-keys.js'
import type { RevokedSids } from '../auth/bearer.js'

export interface OAuthRoutesOptions extends TokenRouteOptions {
  readonly keys: SigningKeys
  /** The edge-revocation set: introspection answers inactive for its sessions. */
  readonly revoked: RevokedSids
  readonly clock: Clock
}

/**
 * RFC 6749 §5.2 shapes for what is refused before a handler answers: a JSON or oversized
 * body is `invalid_request` 400 (not 415/413), a throttled password grant or client
 * authentication a 429 with a registered error code.
 */
const OAUTH_ERRORS: Readonly<Record<string, GatewayErrorCode>> = {
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'GW_OAUTH_UNSUPPORTED_MEDIA_TYPE',
  FST_ERR_CTP_BODY_TOO_LARGE: 'GW_OAUTH_BODY_TOO_LARGE',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'GW_OAUTH_INVALID_REQUEST',
  GW_RATE_LIMITED: 'GW_OAUTH_RATE_LIMITED'
}
const POST_ONLY = ['/oauth/token', '/oauth/revoke', INTROSPECTION_PATH]

async function oauthRoutes (app: FastifyInstance, opts: OAuthRoutesOptions): Promise<void> {
  app.setErrorHandler((err: FastifyError, req, reply) => {
    const mapped = err.code === undefined ? undefined : OAUTH_ERRORS[err.code]
    if (mapped === undefined) return handleError(err, req, reply)
    // A throttle's own description and Retry-After are kept; only the code takes the §5.2 form.
    const known = isLatchkeyError(err) ? { headers: { ...err.headers }, description: err.description } : {}
    return handleError(gatewayError(mapped, { cause: err, ...known }) as unknown as FastifyError, req, reply)
  })
  // RFC 6749 §5.1: no-store on every answer, including those refused before a handler runs
  // (a repeated parameter is caught by the body parser). A callback hook: an async one costs
  // a promise and a microtask on every token request.
  app.addHook('onRequest', (_req, reply, done) => { noStore(reply); done() })
  app.removeAllContentTypeParsers()
  registerFormParser(app)
  const checkAccessToken = createAccessTokenCheck(opts)
  registerTokenRoute(app, opts)
  registerRevokeRoute(app, { ...opts, checkAccessToken })
  registerIntrospectRoute(app, { ...opts, checkAccessToken })
  // RFC 9110 §15.5.6: 405 names the allowed method.
  app.route({
    method: ['GET', 'PUT', 'PATCH', 'DELETE'],
    url: '/oauth/:endpoint',
    handler: async (req) => {
      const known = POST_ONLY.includes(req.url.split('?')[0] as string)
      throw gatewayError(known ? 'GW_OAUTH_METHOD_NOT_ALLOWED' : 'GW_NOT_FOUND', known ? { headers: { Allow: 'POST' } } : {})
    }
  })
  registerDiscoveryRoute(app, opts)
}

export default fp(oauthRoutes, { name: 'latchkey-oauth-routes', fastify: '5.x', encapsulate: true })
