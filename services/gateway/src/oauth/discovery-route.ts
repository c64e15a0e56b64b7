/**
 * GET /.well-known/oauth-authorization-server (RFC 8414 §3): what a standard OAuth client
 * needs to find the token, revocation and key endpoints.
 */
import type { FastifyInstance } from 'fastify'
import type { GatewayConfig } from '../config.js'
import { CLIENT_AUTH_METHODS, CLIENT_AUTH_SIGNING_ALGS } from './client-auth.js'
import { GRANT_TYPES_SUPPORTED } from './token-route.js'

/** Metadata changes only with a deploy; let clients cache it briefly. */
export const DISCOVERY_MAX_AGE_S = 300

export function authorizationServerMetadata (config: GatewayConfig): Record<string, unknown> {
  const base = config.issuer
  return {
    issuer: base,
    token_endpoint: `${base}/oauth/token`,
    jwks_uri: `${base}/.well-known/jwks.json`,
    revocation_endpoint: `${base}/oauth/revoke`,
    grant_types_supported: [...GRANT_TYPES_SUPPORTED],
    // No authorization endpoint: no redirect-based response types are offered.
    response_types_supported: [],
    token_endpoint_auth_methods_supported: [...CLIENT_AUTH_METHODS],
    token_endpoint_auth_signing_alg_values_supported: [...CLIENT_AUTH_SIGNING_ALGS],
    revocation_endpoint_auth_methods_supported: [...CLIENT_AUTH_METHODS, 'none'],
    revocation_endpoint_auth_signing_alg_values_supported: [...CLIENT_AUTH_SIGNING_ALGS],
    access_token_signing_alg_values_supported: ['EdDSA', 'ES256', 'RS256']
  }
}

export function registerDiscoveryRoute (app: FastifyInstance, config: GatewayConfig): void {
  const metadata = JSON.stringify(authorizationServerMetadata(config))
  app.get('/.well-known/oauth-authorization-server', async (_req, reply) => {
    reply.header('Cache-Control', `public, max-age=${DISCOVERY_MAX_AGE_S}`)
    reply.type('application/json')
    return metadata
  })
}
